"""Faster inference without touching the model: autocast precision and torch.compile.

Both are options of evaluation and inference (``evaluation.precision``,
``evaluation.compile``), off by default so that the paper's numbers reproduce:

- ``precision``: "fp32" (default, no autocast), "bf16" or "fp16": the backbone
  and the denoiser run under ``torch.autocast`` on the CPU or the GPU; the
  sampler's arithmetic stays float32 (``common.model.samplers``). In low precision the
  backbone also runs channels-last, which is what makes its convolutions use
  the bf16 kernels (channels-last alone, in fp32, is slower on a CPU).
  "auto" (``resolve_precision``) picks bf16 where the device computes it
  natively and fp32 elsewhere: a CPU without AVX512-BF16 or AMX emulates
  bfloat16, and there bf16 sampling took about 8x the time of fp32.
- ``compile``: the denoising step (``denoiser.denoise``, called K times per
  batch) goes through ``torch.compile``; the context and the backbone, run once
  per batch, stay eager. On a CPU, compiling needs a C++ compiler and takes
  about a minute on first use.
"""
import contextlib
import logging
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")
# What a user may ask for: a precision, or "auto" (resolve_precision picks one for the device).
PRECISION_OPTIONS = PRECISIONS + ("auto",)
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# x86 instruction sets that compute in a 16-bit float type (as torch.cpu.get_capabilities names them);
# without them oneDNN converts to float32 and back around every operation.
NATIVE_CPU_FLAGS = {"bf16": ("avx512_bf16", "amx_bf16"), "fp16": ("avx512_fp16", "amx_fp16")}


def check_precision(precision):
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid precisions: {', '.join(PRECISIONS)}")
    return precision


def cpu_capabilities():
    """The CPU's instruction sets, {"avx512_bf16": True, ...}, as torch reports them.

    ``torch.cpu.get_capabilities()`` where this torch has it, else the flags of
    ``/proc/cpuinfo`` (Linux); {} where neither is available. Tests replace this
    function to play a CPU with or without native bfloat16.
    """
    get = getattr(torch.cpu, "get_capabilities", None)
    if get is not None:
        return dict(get())
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return dict.fromkeys(flags, True)


def native_precision(precision, device):
    """Whether ``device`` computes ``precision`` ("fp32", "bf16" or "fp16") in hardware.

    CUDA: ``torch.cuda.is_bf16_supported(including_emulation=False)`` for bf16,
    compute capability 5.3 or more for fp16. CPU: the instruction sets of
    ``NATIVE_CPU_FLAGS`` (AVX512-BF16 or AMX for bf16). Other devices: fp32 only.
    """
    device = torch.device(device)
    if check_precision(precision) == "fp32":
        return True
    if device.type == "cuda":
        if precision == "bf16":
            return torch.cuda.is_bf16_supported(including_emulation=False)
        return torch.cuda.get_device_capability(device) >= (5, 3)
    if device.type == "cpu":
        capabilities = cpu_capabilities()
        return any(capabilities.get(flag) for flag in NATIVE_CPU_FLAGS[precision])
    return False


def resolve_precision(precision, device):
    """The precision to run: ``precision`` itself, or for "auto" bf16 where ``device`` has native bfloat16, else fp32.

    Logs the choice of "auto"; warns when bf16 or fp16 is asked for on a CPU
    that would emulate it (slower than fp32, not faster).

    Args:
        precision: one of ``PRECISION_OPTIONS``.
        device: a torch.device or string ("cpu", "cuda:0").
    Returns:
        one of ``PRECISIONS``.
    """
    if precision not in PRECISION_OPTIONS:
        raise ValueError(f"unknown precision {precision!r}; valid precisions: {', '.join(PRECISION_OPTIONS)}")
    device = torch.device(device)
    if precision == "auto":
        resolved = "bf16" if native_precision("bf16", device) else "fp32"
        log.info("precision auto: %s on %s (%s)", resolved, device.type,
                 "native bfloat16" if resolved == "bf16" else "no native bfloat16")
        return resolved
    if device.type == "cpu" and not native_precision(precision, device):
        flags = " or ".join(flag.upper().replace("_", "-") for flag in NATIVE_CPU_FLAGS[precision])
        log.warning("precision %s on a CPU without %s: the CPU emulates it, which is slower than fp32 "
                    "(bf16 sampling took about 8x the time of fp32 on such a CPU); --precision auto or fp32 "
                    "is faster here", precision, flags)
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
