"""Checkpoints written atomically: a crash while saving leaves the previous file loadable."""

import os
from pathlib import Path

import torch

from common.errors import UserError


def save_atomically(content: dict, path: Path) -> None:
    """Write `content` with torch.save to a temporary file beside `path`, flush it to disk, then rename it over `path`.

    The rename is atomic on POSIX file systems, so `path` always contains either the old or the new
    checkpoint, never a partial one. A failed write (a full disk, say) raises a UserError.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            torch.save(content, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror}; free some disk space, then run again (an earlier {path.name} is kept)") from None
    except RuntimeError as error:  # torch.save reports a short write as a RuntimeError
        raise UserError(f"cannot write {path}: {str(error).splitlines()[0]}; check the free disk space (an earlier {path.name} is kept)") from None
    finally:
        temporary.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint onto the CPU; it holds only tensors and plain Python values."""
    return torch.load(path, map_location="cpu", weights_only=True)


def describe_load_error(error: Exception) -> str:
    """Describe why torch.load failed on a file, in a few words rather than torch's long advice."""
    if isinstance(error, FileNotFoundError):
        return "the file is missing"
    if isinstance(error, (PermissionError, IsADirectoryError)):
        return error.strerror
    return f"the file is damaged or not a checkpoint ({type(error).__name__})"
