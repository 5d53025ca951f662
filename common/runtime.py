"""Device choice and seeding."""

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from common.errors import ConfigError


def select_device(name: str) -> torch.device:
    """Resolve the DEVICE hyperparameter: "auto" picks CUDA, then Apple MPS, then the CPU.

    Under torchrun, "auto" and "cuda" give each process the GPU of its LOCAL_RANK.
    """
    local_rank = os.environ.get("LOCAL_RANK")
    if name in ("auto", "cuda") and local_rank is not None and torch.cuda.is_available():
        torch.cuda.set_device(int(local_rank))
        return torch.device("cuda", int(local_rank))
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")

    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f'invalid hyperparameter DEVICE={name!r}: expected "auto", "cpu", "cuda", "cuda:N" or "mps"') from None
    if device.type == "cuda":
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if available == 0:
            raise ConfigError(f'invalid hyperparameter DEVICE={name!r}: CUDA is not available here; use DEVICE="auto" or "cpu"')
        if device.index is not None and device.index >= available:
            raise ConfigError(f"invalid hyperparameter DEVICE={name!r}: this machine has {available} CUDA device(s), numbered from 0")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f'invalid hyperparameter DEVICE={name!r}: Apple MPS is not available here; use DEVICE="auto" or "cpu"')
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f'invalid hyperparameter DEVICE={name!r}: expected "auto", "cpu", "cuda", "cuda:N" or "mps"')
    return device


def seed_everything(seed: int | None, offset: int = 0) -> int:
    """Seed Python, numpy and torch with `seed` + `offset`; a `seed` of None draws a fresh one. Return `seed`."""
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    random.seed(seed + offset)
    np.random.seed(seed + offset)
    torch.manual_seed(seed + offset)  # also seeds every CUDA device
    return seed


@contextmanager
def seeded_random_state(seed: int) -> Iterator[None]:
    """Run a block under torch.manual_seed(seed), then restore every torch random generator as it was.

    The quality metrics draw their classifier's training order, latent vectors and KID subsets
    inside this block, in the middle of a training run. They get the same numbers every time, and
    the run's own random stream goes on as if they had not been drawn.
    """
    # fork_rng also restores the generators of the current accelerator's devices (CUDA or Apple MPS),
    # which torch.manual_seed seeds too. NOTE: only run on the CPU so far.
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield
