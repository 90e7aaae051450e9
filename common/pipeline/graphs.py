"""The networks as ONNX graphs: written by ``torch.onnx``, run by onnxruntime in the pipeline.

Three graphs, each with a dynamic batch (N = views x samples):

- ``backbone.onnx``: images (N, 3, 256, 192) -> features_0..3, the four maps (N, C_l, h_l, w_l);
- ``context.onnx``: keypoints_2d (N, 1, 17, 2), ref (N, 17, 2), features_0..3 -> context (N, 5, 17, c);
- ``denoise_step.onnx``: context (N, 5, 17, c), noisy (N, H, 1, 17, 3), t (N,) int64 -> noise
  (N, H, 1, 17, 3): one call of the denoiser, H dynamic too.

The sampler's loop stays in Python (``common.model.samplers.sample``, the diffusers
schedulers): ``OnnxDenoiser.denoise`` stands in for the denoiser's step, so the
ONNX pipeline visits the same timesteps with the same arithmetic. ``manifest.json``
beside the graphs records the model's settings and the opset. onnx and onnxruntime
are an optional extra (``requirements-onnx.txt``), imported only here and only
when a graph is written or read.
"""
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

GRAPHS = ("backbone", "context", "denoise_step")
OPSET = 18
FEATURES = tuple(f"features_{level}" for level in range(4))
MANIFEST = "manifest.json"


class _Backbone(nn.Module):
    """The backbone with a tuple of four maps as its output (ONNX names each)."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, images):
        return tuple(self.backbone(images))


class _Context(nn.Module):
    def __init__(self, denoiser):
        super().__init__()
        self.denoiser = denoiser

    def forward(self, keypoints_2d, ref, f0, f1, f2, f3):
        return self.denoiser.encode_context(keypoints_2d, ref, [f0, f1, f2, f3])


class _DenoiseStep(nn.Module):
    """One denoiser call with the hypotheses folded into the batch here, by expand and reshape.

    ``denoise`` folds them itself with ``repeat_interleave``, which the exporter
    writes as an Expand that onnxruntime refuses; a row per hypothesis with its
    sample's context and timestep is the same computation.
    """

    def __init__(self, denoiser):
        super().__init__()
        self.denoiser = denoiser

    def forward(self, context, noisy, t):
        B, H = noisy.shape[:2]
        rows = context[:, None].expand(B, H, *context.shape[1:]).reshape(B * H, *context.shape[1:])  # (B*H, 5, J, c)
        steps = t[:, None].expand(B, H).reshape(B * H)  # (B*H,)
        noise = self.denoiser.denoise(rows, noisy.reshape(B * H, *noisy.shape[2:]), steps)  # (B*H, 1, J, 3)
        return noise.reshape(noisy.shape)


def example_inputs(backbone, denoiser, batch=2, hypotheses=3):
    """Seeded inputs of the three graphs for a batch of ``batch`` rows: {graph: tuple of tensors}."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn((batch, 3, 256, 192), generator=generator)
    keypoints = torch.rand((batch, 1, 17, 2), generator=generator) * 1.6 - 0.8
    ref = torch.rand((batch, 17, 2), generator=generator) * 1.8 - 0.9
    with torch.no_grad():
        features = tuple(backbone(images))
        context = denoiser.encode_context(keypoints, ref, list(features))
    noisy = torch.randn((batch, hypotheses, 1, 17, 3), generator=generator)
    t = torch.tensor([99, 40] * batch)[:batch]
    return {"backbone": (images,), "context": (keypoints, ref, *features), "denoise_step": (context, noisy, t)}


def export_graphs(backbone, denoiser, folder, model_settings=None):
    """Write the three graphs of eval-mode ``backbone`` and ``denoiser`` (on the CPU, float32) into ``folder``.

    ``model_settings``: a dict recorded in ``manifest.json`` (e.g. the run's model config).
    Returns the paths written, graphs first.
    """
    try:
        import onnx  # noqa: F401  (torch.onnx writes the graphs through it)
    except ImportError as error:
        raise ImportError("writing ONNX graphs needs onnx: pip install -r requirements-onnx.txt") from error
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    backbone, denoiser = backbone.cpu().eval(), denoiser.cpu().eval()
    inputs = example_inputs(backbone, denoiser)
    batch = {0: torch.export.Dim("batch")}
    specs = {  # graph: (module, input names, output names, dynamic dimensions of each input)
        "backbone": (_Backbone(backbone), ["images"], list(FEATURES), (batch,)),
        "context": (_Context(denoiser), ["keypoints_2d", "ref", *FEATURES], ["context"], (batch,) * 6),
        "denoise_step": (_DenoiseStep(denoiser), ["context", "noisy", "t"], ["noise"],
                         (batch, {**batch, 1: torch.export.Dim("hypotheses")}, batch)),
    }
    paths = []
    for name, (module, input_names, output_names, dynamic_shapes) in specs.items():
        path = folder / f"{name}.onnx"
        with torch.no_grad():
            torch.onnx.export(module.eval(), inputs[name], str(path), input_names=input_names,
                              output_names=output_names, dynamic_shapes=dynamic_shapes, opset_version=OPSET,
                              dynamo=True, verbose=False)
        paths.append(path)
    manifest = {"graphs": {name: f"{name}.onnx" for name in GRAPHS}, "opset": OPSET,
                "feature_channels": list(denoiser.feature_channels), "model": model_settings or {}}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return paths + [folder / MANIFEST]


def open_session(path, threads=None):
    """An onnxruntime session of the graph ``path`` on the CPU; ``threads``: its intra-op threads (None: onnxruntime's)."""
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError("running ONNX graphs needs onnxruntime: pip install -r requirements-onnx.txt") from error
    if not Path(path).is_file():
        raise FileNotFoundError(f"ONNX graph {path} not found; write the graphs with python -m common.export")
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(session, inputs):
    """Run ``session`` on named tensors; returns its outputs as float32 CPU tensors."""
    feeds = {name: tensor.detach().cpu().numpy() for name, tensor in inputs.items()}
    return [torch.from_numpy(np.asarray(output)) for output in session.run(None, feeds)]


class OnnxBackbone:
    """``backbone.onnx`` with the backbone's call: images (N, 3, 256, 192) -> four maps (float32, CPU)."""

    def __init__(self, path, threads=None):
        self.session = open_session(path, threads)

    def __call__(self, images):
        return _run(self.session, {"images": images})


class OnnxDenoiser:
    """``context.onnx`` and ``denoise_step.onnx`` with the denoiser's two halves, for ``samplers.sample``."""

    def __init__(self, context_path, step_path, threads=None):
        self.context_session = open_session(context_path, threads)
        self.step_session = open_session(step_path, threads)

    def encode_context(self, keypoints_2d, ref, features):
        named = dict(zip(FEATURES, features))
        return _run(self.context_session, {"keypoints_2d": keypoints_2d, "ref": ref, **named})[0]

    def denoise(self, context, noisy_3d, t):
        return _run(self.step_session, {"context": context, "noisy": noisy_3d, "t": t.long()})[0]


def load_graphs(folder, threads=None):
    """(OnnxBackbone, OnnxDenoiser) of the graphs ``export_graphs`` wrote into ``folder``."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise FileNotFoundError(f"{folder / MANIFEST} not found: {folder} holds no exported graphs; "
                                f"write them with python -m common.export --out {folder}")
    graphs = json.loads((folder / MANIFEST).read_text())["graphs"]
    return (OnnxBackbone(folder / graphs["backbone"], threads),
            OnnxDenoiser(folder / graphs["context"], folder / graphs["denoise_step"], threads))
