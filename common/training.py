"""Checks shared by the training loops."""

from pathlib import Path

import torch

from common.errors import UserError


def check_finite_losses(losses: torch.Tensor, loss_names: list[str], model_name: str, epoch: int, first_iteration: int, results: Path) -> None:
    """Stop the run with one line when a value in `losses` (iterations x loss_names) is NaN or infinite.

    Row 0 of `losses` is iteration `first_iteration` of `epoch`. The message names the first bad
    loss, its epoch and iteration, and the last checkpoint saved in `results`, which stays as it was.
    """
    bad = (~torch.isfinite(losses)).nonzero()
    if len(bad) == 0:
        return
    row, column = bad[0].tolist()
    checkpoint = Path(results) / "checkpoint.pt"
    checkpoint_note = f"the last good checkpoint is {checkpoint}" if checkpoint.exists() else "no checkpoint was saved yet"
    value = losses[row, column].item()
    raise UserError(
        f"{model_name}: the {loss_names[column]} became {value} at epoch {epoch}, iteration {first_iteration + row}; "
        f"{checkpoint_note}. Try a lower LEARNING_RATE"
    )
