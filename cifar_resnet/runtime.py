"""The runtime every layer stands on: which device a run uses and the arithmetic it computes in.

`precision: auto` picks what the device does natively:

bf16 where the GPU supports it natively (compute capability 8.0 or newer: A100, L4, H100, ...), fp16 with
loss scaling below that (a T4 is 7.5: torch would emulate bf16 there, silently and slowly), and fp32 on a
CPU. An explicit bf16 on a GPU without native support is honoured with one warning line. On a CPU only an
explicit bf16 autocasts, and only where oneDNN computes bf16 natively (AVX512-BF16 or AMX: the `cpu` preset's
network trains about 2.5 times faster than in fp32 on a Xeon with AMX); fp16 and auto stay fp32 there, and
bf16 on a CPU without native support falls back to fp32 with one warning line.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .config import ConfigError

NATIVE_BF16_CAPABILITY = (8, 0)  # Ampere and newer compute in bf16 natively


def native_bf16(device: torch.device) -> bool:
    """Does this CUDA device compute in bf16 natively (compute capability 8.0 or newer)?"""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= NATIVE_BF16_CAPABILITY


def native_cpu_bf16() -> bool:
    """Does this CPU compute bf16 natively through oneDNN (AVX512-BF16 or AMX)?"""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str, device: torch.device, warn: Callable[[str], None] | None = None) -> str:
    """The precision that runs on `device` for the configured `precision` (bf16, fp16 or fp32, never auto);
    `warn` receives one line where an explicit bf16 is given to a GPU without native bf16."""
    if device.type != "cuda":
        if precision != "bf16":
            return "fp32"  # fp16 autocast on a CPU is slow; auto means the safe choice there
        if native_cpu_bf16():
            return "bf16"
        if warn is not None:
            warn("warning: train.precision bf16 on a CPU without native bf16 (AVX512-BF16 or AMX): computing in fp32")
        return "fp32"
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp16"
    if precision == "bf16" and not native_bf16(device) and warn is not None:
        major, minor = torch.cuda.get_device_capability(device)
        warn(f"warning: train.precision bf16 on {torch.cuda.get_device_name(device)} (compute capability "
             f"{major}.{minor}, no native bf16): torch emulates it, slowly; precision auto would use fp16")
    return precision


ONEDNN_NARROW_INPUT = 8  # a strided 1x1 convolution with fewer input channels than this is the case below


def channels_last_trains_safely(model: nn.Module, device: torch.device) -> bool:
    """False on a CPU where `model` has a strided 1x1 convolution with under 8 input channels: oneDNN 3.12
    (torch 2.14) computes its weight gradient in channels-last memory past the end of a buffer on AVX2 CPUs,
    and the run then hangs in malloc or crashes. Contiguous (NCHW) memory is unaffected."""
    if device.type != "cpu":
        return True
    return not any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.stride != (1, 1)
                   and m.in_channels < ONEDNN_NARROW_INPUT for m in model.modules())


def divergence_advice(precision: str, device: torch.device) -> str:
    """What to change when the loss became NaN or infinite with `precision` (as resolved) on `device`."""
    advice = "lower train.lr or set train.grad_clip"
    if precision == "fp16" and native_bf16(device):
        return f"{advice}, or set train.precision to bf16 (this GPU computes it natively)"
    if precision == "fp16":
        return f"{advice}, or set train.precision to fp32 (slower, but it cannot overflow)"
    return advice


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`device` as a torch.device (None: `default_device()`); `ConfigError` for a name torch does not know or a
    device this machine lacks."""
    if device is None or device == "":
        return default_device()
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device {device}: not a device name; use cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"--device {device}: this machine has no CUDA GPU; use --device cpu (or leave "
                              "--device out)")
        if resolved.index is not None and resolved.index >= count:
            raise ConfigError(f"--device {device}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    elif resolved.type != "cpu":
        raise ConfigError(f"--device {device}: only cpu and cuda are supported; use cpu, cuda or cuda:N")
    return resolved


def autocast(device: torch.device, precision: str):
    """Autocast to `precision` as `resolve_precision` returned it for `device` (bf16, fp16, or fp32: off).
    Resolve once, outside any loop: this is called on every step and checks nothing."""
    enabled = precision != "fp32"
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16, enabled=enabled)
