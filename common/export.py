"""``python -m common.export``: write a SnapPose model as ONNX graphs (backbone, context, one denoiser step).

    python -m common.export --checkpoint checkpoint/best_h36m.bin --out onnx/
    python -m common.export --checkpoint RUN/best_h36m.bin --config RUN/config.yaml --out RUN/onnx

The model is built as evaluation builds it (``SnapPosePipeline.from_pretrained``);
the graphs have a dynamic batch (``common.pipeline.graphs``). After writing, each
graph is run by onnxruntime on seeded inputs and compared with PyTorch, and the
largest relative difference is printed. Run them with
``SnapPosePipeline.from_onnx(folder)``. Needs the optional extra:
``pip install -r requirements-onnx.txt``.
"""
import argparse
import logging
import sys

import torch

from common.core.errors import ConfigError
from common.model.checkpoints import CheckpointError
from common.pipeline import SnapPosePipeline
from common.pipeline.config import config_to_dict
from common.pipeline.graphs import GRAPHS, example_inputs, export_graphs, load_graphs

log = logging.getLogger(__name__)


def relative_difference(ours, reference):
    """|ours - reference| / |reference| over the whole tensor (Frobenius norms)."""
    return ((ours - reference).norm() / reference.norm()).item()


def graph_differences(backbone, denoiser, folder, batch=3, hypotheses=5):
    """Each graph of ``folder`` against PyTorch on seeded inputs of another batch size than the export's.

    Returns {graph: largest relative difference over its outputs}.
    """
    onnx_backbone, onnx_denoiser = load_graphs(folder)
    inputs = example_inputs(backbone, denoiser, batch, hypotheses)
    with torch.no_grad():
        images, = inputs["backbone"]
        keypoints, ref, *features = inputs["context"]
        context, noisy, t = inputs["denoise_step"]
        pairs = {
            "backbone": list(zip(onnx_backbone(images), backbone(images))),
            "context": [(onnx_denoiser.encode_context(keypoints, ref, features),
                         denoiser.encode_context(keypoints, ref, features))],
            "denoise_step": [(onnx_denoiser.denoise(context, noisy, t), denoiser.denoise(context, noisy, t))],
        }
    return {name: max(relative_difference(a, b) for a, b in pairs[name]) for name in GRAPHS}


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m common.export", allow_abbrev=False,
                                     description="Write a SnapPose checkpoint as ONNX graphs with a dynamic batch.")
    parser.add_argument("--checkpoint", default="checkpoint/best_h36m.bin",
                        help="SnapPose checkpoint (default: checkpoint/best_h36m.bin)")
    parser.add_argument("--config", help="run configuration (default: the one stored with the checkpoint, "
                                         "else the released model's)")
    parser.add_argument("--backbone-weights", metavar="FILE",
                        help="PoseHRNet-W32 weights (default: the config's, checkpoint/pose_hrnet_w32_256x192.pth)")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="unpickle weight files fully (can run code from them): only for files you trust")
    parser.add_argument("--out", default="onnx", help="folder for the graphs and manifest.json (default: onnx)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        pipeline = SnapPosePipeline.from_pretrained(args.checkpoint, args.config, args.backbone_weights, "cpu",
                                                    trust_checkpoint=args.trust_checkpoint)
        written = export_graphs(pipeline.backbone, pipeline.denoiser, args.out,
                                config_to_dict(pipeline.config)["model"])
        differences = graph_differences(pipeline.backbone, pipeline.denoiser, args.out)
    except (CheckpointError, ConfigError, FileNotFoundError, ImportError) as error:
        log.error("%s", error)
        return 2
    for path in written:
        print(f"  {path}")
    for name, difference in differences.items():
        print(f"{name}: largest relative difference to PyTorch {difference:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
