"""Numeric precision of training (the PRECISION hyperparameter) and the switches it implies.

With "bf16", the networks' forward passes run under torch.autocast with bfloat16: convolutions
and matrix products compute in bf16, while parameters, optimizer states, batch-norm statistics,
losses, sample grids and checkpoints stay fp32. The networks of this project return fp32
outputs under autocast too (see common/networks.py and common/coders.py), so every loss is
computed in fp32 from them.

Networks and batches are also kept in channels-last memory format: on the CPU in both
precisions, where oneDNN's convolutions measured faster that way, and on CUDA with bf16.
"""

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from common.config import PRECISIONS
from common.errors import ConfigError


def has_fast_bf16(device: torch.device) -> bool:
    """Return whether `device` computes bf16 convolutions and matrix products in hardware.

    On the CPU this needs AVX-512 BF16 (Intel Cooper Lake and later Xeons, AMD Zen 4 and later)
    or AMX tiles (Intel Sapphire Rapids and later). Without them, oneDNN emulates bf16 with fp32
    instructions plus conversions, which is slower than plain fp32. On CUDA it needs compute
    capability 8.0 (Ampere) or later. Apple MPS counts as not fast, because this project has not
    measured bf16 there.
    """
    if device.type == "cpu":
        # NOTE: torch.cpu exposes these checks with a leading underscore (torch 2.14); an x86 CPU
        # without them, and any ARM CPU, gets fp32 from PRECISION="auto".
        checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        return any(check() for check in checks if check is not None)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return False


def resolve_precision(requested: str, device_type: str, fast_bf16: bool) -> str:
    """Return "fp32" or "bf16" for a PRECISION value on a device of type `device_type`.

    "auto" picks bf16 only where `fast_bf16` (see has_fast_bf16): bf16 gives up precision for
    speed, and emulated bf16 gives no speed. "bf16" is honoured on any device that torch can
    autocast on, fast or not.
    """
    if requested not in PRECISIONS:
        raise ConfigError(f"invalid hyperparameter PRECISION={requested!r}: expected one of {', '.join(PRECISIONS)}")
    if requested == "auto":
        return "bf16" if fast_bf16 else "fp32"
    if requested == "bf16" and not torch.amp.is_autocast_available(device_type):
        raise ConfigError(f'invalid hyperparameter PRECISION="bf16": torch cannot autocast on {device_type}; use PRECISION="auto" or "fp32"')
    return requested


@dataclass(frozen=True)
class Precision:
    """The resolved precision of a run on one device, and the memory format that goes with it."""

    name: str  # "fp32" or "bf16"
    device_type: str  # "cpu", "cuda" or "mps"
    channels_last: bool

    @classmethod
    def for_device(cls, requested: str, device: torch.device) -> "Precision":
        """Resolve PRECISION on `device`, printing a warning when bf16 is requested where it is emulated."""
        fast_bf16 = has_fast_bf16(device)
        name = resolve_precision(requested, device.type, fast_bf16)
        if name == "bf16" and not fast_bf16:
            print(f'warning: this {device.type} has no bf16 hardware, so PRECISION="bf16" runs emulated and usually slower than "fp32"')
        # On a 2-core AMD EPYC, benchmarks/step_speed.py --device cpu measured channels-last faster
        # in fp32 and in bf16 (BENCHMARKS.md).
        # NOTE: the CUDA rule is untested here; benchmarks/step_speed.py measures it on a GPU.
        channels_last = device.type == "cpu" or (device.type == "cuda" and name == "bf16")
        return cls(name, device.type, channels_last)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self):
        """Return a context that runs the forward passes inside it in this precision."""
        if self.name == "bf16":
            return torch.autocast(self.device_type, dtype=torch.bfloat16)
        return nullcontext()

    def prepare_network(self, network: nn.Module) -> nn.Module:
        """Convert the 4-D parameters of `network` to this precision's memory format, in place; the values stay fp32."""
        return network.to(memory_format=self.memory_format)

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """Return a batch of N x C x H x W images in this precision's memory format."""
        return images.contiguous(memory_format=self.memory_format)
