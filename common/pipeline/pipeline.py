"""The SnapPose pipeline: backbone, denoiser and a ``SamplingConfig`` that turn a test batch into hypotheses.

The one object that applies the model. Evaluation, validation during training,
inference on people's images, the demo and the benchmarks all call it, and none
of them re-implements its steps::

    pipeline = SnapPosePipeline.from_pretrained("checkpoint/human36m/best_h36m.bin")
    hypotheses = pipeline(batch)  # (B, H, 17, 3) metres, root-relative

The stages are methods, so a benchmark can time each one:

1. ``views(batch)``: the flip test's views stacked view-major (``common.pipeline.views``);
2. ``features(images)``: the frozen backbone's four maps;
3. ``context(keypoints, ref, features)``: the denoiser's context, once per batch;
4. ``initial_noise(keys)``: x_T per sample, seeded by its key;
5. ``sample(context, noise)``: the sampler's K denoising steps (``common.model.samplers.sample``);
6. ``merge(poses)``: the mirror view un-flipped and averaged, the root set to 0.

``encode(batch)`` runs 1 to 3. Precision (autocast, the backbone's memory format),
compilation of the denoising step and the device are prepared once, in
``prepare``; nothing here joins a process group.
"""
import torch

from common.model.acceleration import autocast, compile_denoiser, prepare_backbone, resolve_precision, run_backbone
from common.model.checkpoints import load_snappose_weights
from common.model.samplers import SamplingConfig, sample
from common.pipeline.config import resolve_config
from common.pipeline.graphs import load_graphs
from common.pipeline.views import initial_noise, merge_views, stack_views, view_count

HEATMAP_JOINTS = 17


def default_device(device=None):
    """``device`` as a torch.device; None: the first CUDA device if there is one, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class SnapPosePipeline:
    """Backbone, denoiser and sampling settings: a test batch in, H hypotheses per sample out.

    Args:
        backbone: the frozen PoseHRNet (``common.model.backbone``) in eval mode, or
            anything that maps images (N, 3, 256, 192) to its four feature maps
            (the ONNX graph, ``common.pipeline.onnx``).
        denoiser: a ``SnapPoseDenoiser`` in eval mode, or anything with its
            ``encode_context`` and ``denoise``.
        sampling: a ``SamplingConfig`` (H, K, sampler, precision, compile, flip test, seed).
        device: where the networks are; None: the denoiser's parameters' device.
        config: the run configuration the networks were built from (a
            ``common.pipeline.config.Config``), if any.
        compile_mode: torch.compile's mode when ``sampling.compile`` (None; "reduce-overhead"
            for CUDA graphs; "max-autotune").
    """

    def __init__(self, backbone, denoiser, sampling=SamplingConfig(), device=None, config=None, compile_mode=None):
        self.backbone = backbone
        self.denoiser = denoiser
        self.config = config
        self.compile_mode = compile_mode
        self.device = torch.device(device) if device is not None else next(denoiser.parameters()).device
        self.sampling = None
        self.prepare(sampling)

    @classmethod
    def from_config(cls, cfg, weights, device=None, heatmaps=False, trust_checkpoint=False, sampling=None):
        """Build the networks as training builds them (``Config.networks``) and load the checkpoint ``weights``.

        Args:
            cfg: a ``common.pipeline.config.Config``.
            weights: SnapPose checkpoint (a released ``best_*.bin`` or one training wrote).
            device: "cpu", "cuda", ...; None: ``default_device()``.
            heatmaps: also build and load the backbone's heatmap head (finding 2D
                keypoints needs it); only with a pretrained backbone.
            trust_checkpoint: unpickle weight files fully, which can run code from them.
            sampling: a ``SamplingConfig``; None: the config's evaluation settings.
        Returns:
            (pipeline, checkpoint dict): the checkpoint's epoch and other keys, as
            ``common.model.checkpoints.load_snappose_weights`` returns them.
        """
        device = default_device(device)
        head = HEATMAP_JOINTS if heatmaps and cfg.weights.pretrained_backbone else 0
        backbone, denoiser = cfg.networks(device, trust_checkpoint, heatmap_joints=head)
        checkpoint = load_snappose_weights(denoiser, weights, trust_checkpoint)
        denoiser.eval()
        sampling = cfg.sampling() if sampling is None else sampling
        return cls(backbone, denoiser, sampling, device, cfg), checkpoint

    @classmethod
    def from_pretrained(cls, weights, config=None, backbone_weights=None, device=None, heatmaps=False,
                        trust_checkpoint=False, sampling=None):
        """The pipeline of a weight file: ours, or the released ``best_*.bin`` with the PoseHRNet file.

        Args:
            weights: SnapPose checkpoint.
            config: a Config or a YAML path; None: the one stored in the checkpoint,
                else ``config.yaml`` beside it, else the released model's
                (``common.pipeline.config.resolve_config``).
            backbone_weights: the PoseHRNet file (or the Context-Aware PoseFormer
                file holding the same HRNet), overriding the config's ``weights.backbone``.
            device, heatmaps, trust_checkpoint, sampling: as ``from_config``.
        Returns:
            SnapPosePipeline.
        """
        cfg = resolve_config(weights, config, trust_checkpoint)
        if backbone_weights is not None:
            cfg.weights.backbone = str(backbone_weights)
        return cls.from_config(cfg, weights, device, heatmaps, trust_checkpoint, sampling)[0]

    @classmethod
    def from_onnx(cls, folder, sampling=SamplingConfig(), threads=None):
        """The pipeline on the ONNX graphs in ``folder`` (``python -m common.export``), run by onnxruntime on the CPU.

        The sampler's loop is the same Python loop (``common.model.samplers.sample``);
        only the networks' calls go to the graphs. The graphs are float32:
        ``sampling.precision`` must be "fp32" and ``sampling.compile`` off.
        ``threads``: onnxruntime's intra-op threads (None: its default, one per core).
        """
        if sampling.precision == "auto":  # the graphs are float32 on every CPU
            sampling = sampling.replace(precision="fp32")
        if sampling.precision != "fp32" or sampling.compile:
            raise ValueError(f"ONNX graphs run in fp32 without torch.compile; got precision "
                             f"{sampling.precision!r}, compile {sampling.compile}")
        backbone, denoiser = load_graphs(folder, threads)
        return cls(backbone, denoiser, sampling, device="cpu")

    def prepare(self, sampling):
        """Make the networks ready for ``sampling``: the one place precision and compilation are set.

        The backbone takes the memory format of the precision; the denoising step
        is compiled if ``sampling.compile``. What the previous settings already
        prepared is kept (a compiled step is not compiled again for other steps or
        another sampler). Precision "auto" becomes the one it picks for the device
        (``acceleration.resolve_precision``), which ``self.sampling`` then holds. Returns self.
        """
        before = self.sampling
        if sampling.precision == "auto":
            sampling = sampling.replace(precision=resolve_precision("auto", self.device))
        if before is None or sampling.precision != before.precision:
            prepare_backbone(self.backbone, sampling.precision)
        if before is None or sampling.compile != before.compile:
            self._denoiser = compile_denoiser(self.denoiser, sampling.compile, self.compile_mode)
        self.sampling = sampling
        return self

    @property
    def has_heatmaps(self):
        """Whether the backbone has its heatmap head (``final_layer``), which finding 2D keypoints needs."""
        return getattr(self.backbone, "final_layer", None) is not None

    def views(self, batch):
        """Stage 1: images (V*B, 3, 256, 192), keypoints (V*B, 1, 17, 2), ref (V*B, 17, 2) on the device."""
        return stack_views(batch, self.sampling.flip, self.device)

    @torch.no_grad()
    def features(self, images):
        """Stage 2: the backbone's four maps (N, C_l, h_l, w_l) of ``images`` (N, 3, 256, 192), float32."""
        return run_backbone(self.backbone, images, self.sampling.precision)

    @torch.no_grad()
    def context(self, keypoints, ref, features):
        """Stage 3: the denoiser's context (N, 5, 17, c) of keypoints (N, 1, 17, 2), ref (N, 17, 2) and the maps."""
        with autocast(self.device, self.sampling.precision):
            return self._denoiser.encode_context(keypoints, ref, features)

    def encode(self, batch):
        """Stages 1 to 3 on a test batch: the context (V*B, 5, 17, c) of its views."""
        images, keypoints, ref = self.views(batch)
        return self.context(keypoints, ref, self.features(images))

    def initial_noise(self, keys):
        """Stage 4: x_T (V*B, H, 1, 17, 3) of the samples named ``keys``, the same for both views."""
        noise = initial_noise(keys, self.sampling.hypotheses, self.sampling.seed, self.device)
        return noise.repeat(view_count(self.sampling.flip), 1, 1, 1, 1)

    @torch.no_grad()
    def sample(self, context, noise, progress=False):
        """Stage 5: K denoising steps from ``noise`` (V*B, H, 1, 17, 3) -> poses of the same shape, metres."""
        return sample(self._denoiser, context, noise, self.sampling, progress)

    def merge(self, poses):
        """Stage 6: (V*B, H, 1, 17, 3) -> (B, H, 17, 3), the views merged, root exactly 0."""
        return merge_views(poses, self.sampling.flip)

    @torch.no_grad()
    def __call__(self, batch):
        """Draw H hypotheses for a test batch.

        Args:
            batch: a test batch of ``common.data.loader.build_loader(train=False)``:
                crop (B, 256, 192, 3) uint8 or image (B, 2, 3, 256, 192), keypoints_2d
                (B, 2, 17, 2), ref (B, 2, 17, 2), key (B,); view 0 the original, view 1
                the mirror image.
        Returns:
            (B, H, 17, 3) root-relative hypotheses in metres, root exactly 0, on the device.
        """
        context = self.encode(batch)
        return self.merge(self.sample(context, self.initial_noise(batch["key"])))
