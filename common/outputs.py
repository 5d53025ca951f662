"""Results folder contents: sample grids, loss plots, metrics.csv and progress.gif."""

import csv
import os
import time
from contextlib import contextmanager, suppress
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # render to files only, so plots work with no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402
from torchvision.utils import make_grid, save_image  # noqa: E402

from common.errors import UserError  # noqa: E402


def prepare_results_folder(folder: Path, keep: bool = False) -> Path | None:
    """Create an empty results folder and check it is writable; return where an earlier run's folder was moved.

    An earlier run's results are never mixed with a new run's: a non-empty folder is renamed
    aside to `<folder>_<time of its last change>` before the new run starts. With `keep`, for a
    resumed run, the folder stays as it is and is only checked.
    """
    folder = Path(folder)
    if folder.is_symlink() and not folder.exists() or folder.exists() and not folder.is_dir():
        raise UserError(f"the results folder {folder} is a file or a broken link, not a folder; move or delete it, then run again")
    moved_to = None
    if not keep and folder.is_dir() and any(folder.iterdir()):
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(folder.stat().st_mtime))
        moved_to = folder.with_name(f"{folder.name}_{stamp}")
        suffix = 1
        while moved_to.exists():
            suffix += 1
            moved_to = folder.with_name(f"{folder.name}_{stamp}_{suffix}")
        try:
            folder.rename(moved_to)
        except OSError as error:
            raise UserError(f"cannot move the earlier results {folder} aside: {error.strerror}; move or delete it by hand") from None

    probe = folder / ".write_probe"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"0" * 65536)
        probe.unlink()
    except OSError as error:
        with suppress(OSError):  # a partly written probe on a full disk
            probe.unlink(missing_ok=True)
        raise UserError(
            f"cannot write to the results folder {folder}: {error.strerror}; "
            "free some disk space or fix its permissions, then run again"
        ) from None
    return moved_to


@contextmanager
def reporting_write_errors(folder: Path):
    """Turn an OSError raised while writing results (a full disk, a removed folder) into one-line UserError."""
    try:
        yield
    except OSError as error:
        raise UserError(f"cannot write the results into {folder}: {error.strerror}; free some disk space, then run again") from None


def save_grid(images: torch.Tensor, path: Path, columns: int) -> None:
    """Save images in [-1, 1] as one grid PNG; the mapping to 0..255 is fixed and clamped, never per-image min-max."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_image(images.detach().float().cpu().add(1).div(2).clamp(0, 1), path, nrow=columns, padding=2)


def save_labelled_grid(images: torch.Tensor, path: Path, columns: int, row_names: list[str], padding: int = 2) -> None:
    """Save images in [-1, 1] as a grid with `columns` images per row and each row's name written at its left."""
    grid = make_grid(images.detach().float().cpu().add(1).div(2).clamp(0, 1), nrow=columns, padding=padding)
    tiles = Image.fromarray(grid.mul(255).add(0.5).clamp(0, 255).byte().permute(1, 2, 0).numpy())
    font = ImageFont.load_default()
    draw = ImageDraw.Draw(tiles)
    margin = max(int(draw.textlength(name, font=font)) for name in row_names) + 8

    canvas = Image.new("RGB", (tiles.width + margin, tiles.height), "white")
    canvas.paste(tiles, (margin, 0))
    draw = ImageDraw.Draw(canvas)
    tile_size = images.shape[-2]
    for row, name in enumerate(row_names):
        centre = padding + row * (tile_size + padding) + tile_size // 2
        draw.text((margin - 4, centre), name, fill="black", font=font, anchor="rm")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def append_metrics_row(path: Path, row: dict) -> None:
    """Append one row to a CSV file, writing the header first when the file is new.

    A row with columns the file lacks (the quality metrics, measured only in some epochs)
    rewrites the file with the new columns added to the header, so that every row lines up.
    """
    path = Path(path)
    fields = []
    if path.exists() and path.stat().st_size > 0:
        with open(path, newline="", encoding="utf-8") as file:
            fields = next(csv.reader(file), [])
    new_fields = [name for name in row if name not in fields]
    if fields and new_fields:
        with open(path, newline="", encoding="utf-8") as file:
            rows = list(csv.DictReader(file))
        fields += new_fields
        rewrite_csv(path, fields, rows)
    with open(path, "a", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=fields or list(row), restval="")
        if not fields:
            writer.writeheader()
        writer.writerow(row)


def rewrite_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    """Replace a CSV file with `rows` under the header `fields`, through a temporary file renamed over it."""
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, path)


def save_loss_plot(epoch_losses: dict[str, list[float]], iteration_losses: dict[str, list[float]], path: Path) -> None:
    """Plot each loss's mean per epoch (left) and its value per iteration (right)."""
    figure, (per_epoch, per_iteration) = plt.subplots(1, 2, figsize=(11, 4))
    for name, values in epoch_losses.items():
        per_epoch.plot(range(1, len(values) + 1), values, marker="o", label=name)
    per_epoch.set(xlabel="epoch", ylabel="mean loss", title="loss per epoch")
    per_epoch.xaxis.set_major_locator(MaxNLocator(integer=True))
    for name, values in iteration_losses.items():
        per_iteration.plot(range(1, len(values) + 1), values, linewidth=0.6, label=name)
    per_iteration.set(xlabel="iteration", ylabel="loss", title="loss per iteration")
    for axes in (per_epoch, per_iteration):
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def save_progress_gif(frames: list[Path], path: Path, seconds_per_frame: float = 0.5) -> None:
    """Join PNG grids, in order, into an animated GIF that loops forever."""
    images = [Image.open(frame).convert("RGB") for frame in frames if Path(frame).exists()]
    if not images:
        return
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(seconds_per_frame * 1000), loop=0)
