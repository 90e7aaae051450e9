"""Faster inference without touching the model: autocast precision and torch.compile.

Both are options of evaluation and inference (``evaluation.precision``,
``evaluation.compile``), off by default so that the paper's numbers reproduce:

- ``precision``: "fp32" (default, no autocast), "bf16" or "fp16": the backbone
  and the denoiser run under ``torch.autocast`` on the CPU or the GPU; the
  sampler's arithmetic stays float32 (``common.model.samplers``). In low precision the
  backbone also runs channels-last, which is what makes its convolutions use
  the bf16 kernels (channels-last alone, in fp32, is slower on a CPU).
- ``compile``: the denoising step (``denoiser.denoise``, called K times per
  batch) goes through ``torch.compile``; the context and the backbone, run once
  per batch, stay eager. On a CPU, compiling needs a C++ compiler and takes
  about a minute on first use.
"""
import contextlib

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision):
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid precisions: {', '.join(PRECISIONS)}")
    return precision


def autocast(device, precision="fp32"):
    """``torch.autocast`` for ``precision`` on ``device`` (a torch.device or string); fp32: no autocast."""
    if check_precision(precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=_DTYPES[precision])


def prepare_backbone(backbone, precision="fp32"):
    """Put the backbone in the memory format that suits ``precision`` (channels-last below fp32); returns it."""
    if check_precision(precision) != "fp32":
        backbone.to(memory_format=torch.channels_last)
    return backbone


def run_backbone(backbone, images, precision="fp32"):
    """The backbone's four feature maps of ``images`` (N, 3, 256, 192) under ``precision``, as float32."""
    if precision == "fp32":
        return backbone(images)
    with autocast(images.device, precision):
        features = backbone(images.contiguous(memory_format=torch.channels_last))
    return [f.float().contiguous() for f in features]


class CompiledDenoiser(nn.Module):
    """A denoiser whose ``denoise`` step is compiled; ``encode_context`` runs eagerly.

    Shares the wrapped denoiser's parameters (its ``state_dict`` is the
    denoiser's under ``denoiser.``); sampling functions take it in place of the
    denoiser. ``mode`` is torch.compile's (None, "reduce-overhead" for CUDA
    graphs, "max-autotune").
    """

    def __init__(self, denoiser, mode=None):
        super().__init__()
        self.denoiser = denoiser
        self._denoise = torch.compile(denoiser.denoise, mode=mode, dynamic=False)

    def encode_context(self, keypoints_2d, ref, features):
        return self.denoiser.encode_context(keypoints_2d, ref, features)

    def denoise(self, context, noisy_3d, t):
        # A copy: with CUDA graphs ("reduce-overhead") the output buffer is overwritten by the next call,
        # while multistep samplers keep earlier outputs.
        return self._denoise(context, noisy_3d, t).clone()

    def forward(self, keypoints_2d, ref, noisy_3d, features, t):
        return self.denoise(self.encode_context(keypoints_2d, ref, features), noisy_3d, t)


def compile_denoiser(denoiser, enabled=True, mode=None):
    """``CompiledDenoiser(denoiser, mode)`` if ``enabled``, else ``denoiser`` itself."""
    return CompiledDenoiser(denoiser, mode) if enabled else denoiser
