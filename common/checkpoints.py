"""Checkpoints written atomically: a crash while saving leaves the previous file loadable."""

import os
from pathlib import Path

import torch


def save_atomically(content: dict, path: Path) -> None:
    """Write `content` with torch.save to a temporary file beside `path`, flush it to disk, then rename it over `path`.

    The rename is atomic on POSIX file systems, so `path` always contains either the old or the new
    checkpoint, never a partial one.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            torch.save(content, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint onto the CPU; it holds only tensors and plain Python values."""
    return torch.load(path, map_location="cpu", weights_only=True)
