"""The epoch loop shared by every model: progress bar, loss history, plots, metrics.csv, checkpoints and resuming.

A model's training plugs in as a task (see TrainingTask): the loop calls its `train_iteration`
on each batch and its `end_epoch` after each epoch. Every checkpoint contains the task's state
(networks, optimizers, the fixed inputs of the grids) and the loop's own: the epoch, the loss
history and the state of every random number generator, so that a run resumed from it continues
exactly as the uninterrupted run would have.
"""

import csv
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from common import distributed
from common.checkpoints import describe_load_error, load_checkpoint, save_atomically
from common.config import write_hyperparameters
from common.data import BatchLoader
from common.errors import ConfigError, UserError
from common.outputs import append_metrics_row, prepare_results_folder, reporting_write_errors, rewrite_csv, save_loss_plot
from common.runtime import seed_everything, select_device

if TYPE_CHECKING:
    from common.metrics import Evaluator

CHECKPOINT_NAME = "checkpoint.pt"
# The keys every resumable checkpoint has, besides the task's own.
RESUME_KEYS = ("epoch", "history", "hyperparameters", "random_state")


@dataclass
class Progress:
    """The checkpoint this process wrote or resumed from, for the message printed when it is interrupted."""

    checkpoint: Path | None = None
    epoch: int = 0


# Read by common.cli, which must not import torch to print its interruption message.
progress = Progress()
# Hyperparameters that may differ between a run and its resumption: the length of the run, and where and in which precision it runs.
RESUMABLE_CHANGES = ("NB_EPOCH", "DEVICE", "PRECISION")


@dataclass
class EpochSummary:
    """A task's report at the end of an epoch, besides the mean of its training losses."""

    text: str  # the epoch's log line, after "epoch E/N: "
    losses: dict[str, float] = field(default_factory=dict)  # more per-epoch losses for the history and the loss plot
    columns: dict[str, str] = field(default_factory=dict)  # more metrics.csv columns, already formatted


class TrainingTask(Protocol):
    """A model's part in the shared loop."""

    name: str  # the model's name, written into checkpoints and messages
    loss_names: list[str]  # the losses train_iteration returns, in order
    networks: dict[str, nn.Module]  # the trained networks by name, unwrapped

    def train_iteration(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Train on one batch of images in [-1, 1]; return its losses as a 1-D tensor."""

    def end_epoch(self, epoch: int, mean_losses: dict[str, float], first_batch: torch.Tensor, results: Path) -> EpochSummary:
        """Write the epoch's grids into `results` and summarise the epoch."""

    def state_dict(self) -> dict:
        """Return everything a resumed run needs of the task, as tensors and plain Python values."""

    def load_state_dict(self, state: dict) -> None: ...

    def finish(self, results: Path, epochs: int) -> None:
        """Write the files of a finished run."""

    def build_evaluator(self) -> "Evaluator":
        """Return the quality-metrics evaluator of this run's dataset (common.metrics)."""

    def measure(self, evaluator: "Evaluator", include_inception: bool) -> dict[str, float]:
        """Measure samples of the model as it is now with `evaluator`."""


def start_run(model_name: str, hyperparameters: dict, results: Path, resume: bool) -> tuple[dict, dict | None, torch.device]:
    """Return the run's hyperparameters, with its seed, the checkpoint it resumes from (None for a new run) and its device.

    A resumed run keeps the checkpoint's hyperparameters; only those in RESUMABLE_CHANGES may
    differ from the current ones. Under torchrun this joins the process group. Python, numpy
    and torch are seeded with SEED plus the rank, so that each process draws its own latent
    vectors, while the data order comes from SEED alone (see BatchLoader).
    """
    if hyperparameters.get("DATASET_PATH") is not None:
        # Saved absolute, so a run resumed from another working directory reads the same folder.
        hyperparameters = {**hyperparameters, "DATASET_PATH": str(Path(hyperparameters["DATASET_PATH"]).expanduser().resolve())}
    checkpoint = None
    if resume:
        checkpoint = load_resumable_checkpoint(results / CHECKPOINT_NAME, model_name)
        hyperparameters = resumed_hyperparameters(results / CHECKPOINT_NAME, checkpoint, hyperparameters)
        progress.checkpoint, progress.epoch = results / CHECKPOINT_NAME, checkpoint["epoch"]
    device = select_device(hyperparameters["DEVICE"])
    distributed.start(device)
    seed = seed_everything(hyperparameters["SEED"], offset=distributed.rank())
    return {**hyperparameters, "SEED": seed}, checkpoint, device  # a drawn seed is saved, so the run can be repeated


def describe_devices(device: torch.device) -> str:
    """Name the device, and under torchrun the number of processes: "cpu", "2 processes on cpu"."""
    count = distributed.world_size()
    return f"{count} processes on {device.type}" if count > 1 else str(device)


def load_resumable_checkpoint(path: Path, model_name: str) -> dict:
    """Load the checkpoint a run resumes from, checking that `model_name` wrote it."""
    if not path.is_file():
        raise UserError(f"no checkpoint to resume at {path}; {earlier_runs_hint(path.parent)}")
    try:
        checkpoint = load_checkpoint(path)
    except Exception as error:  # noqa: BLE001 - torch.load raises many types for a damaged or foreign file
        raise UserError(f"cannot resume from {path}: {describe_load_error(error)}; train without --resume to start a new run") from None
    written_by = checkpoint.get("model") if isinstance(checkpoint, dict) else None
    if written_by != model_name:
        source = f"{written_by}.py" if written_by else "another program"
        raise UserError(f"cannot resume from {path}: it was written by {source}, not {model_name}.py; train without --resume to start a new run")
    missing = [key for key in RESUME_KEYS if key not in checkpoint]
    if missing:
        raise UserError(f"cannot resume from {path}: it has no {', '.join(missing)} (written by an older version?); train without --resume")
    return checkpoint


def earlier_runs_hint(results: Path) -> str:
    """Suggest the earlier runs beside `results` that have a checkpoint, newest first, or starting a new run."""
    candidates = sorted(
        (folder for folder in results.parent.glob("results_*") if folder != results and (folder / CHECKPOINT_NAME).is_file()),
        key=lambda folder: (folder / CHECKPOINT_NAME).stat().st_mtime,
        reverse=True,
    )
    if not candidates:
        return "train without --resume to start a new run"
    names = ", ".join(folder.name for folder in candidates[:3])
    return (
        f"checkpoints of other runs are in {names}: to resume one, pass its DATASET_NAME, or rename "
        f"an earlier run's folder back to {results.name}; or train without --resume"
    )


def resumed_hyperparameters(path: Path, checkpoint: dict, current: dict) -> dict:
    """Return the checkpoint's hyperparameters with the current values of RESUMABLE_CHANGES.

    Any other current value that differs from the checkpoint's stops the run with one line
    naming each difference. A SEED of None matches the seed the run drew.
    """
    saved = checkpoint["hyperparameters"]
    differences = [
        f"{name}={current.get(name)!r} (the run has {saved.get(name)!r})"
        for name in sorted(set(saved) | set(current))
        if name not in RESUMABLE_CHANGES
        and saved.get(name) != current.get(name)
        and not (name == "SEED" and current.get(name) is None)
    ]
    if differences:
        raise ConfigError(
            f"cannot resume from {path} with different hyperparameters: {', '.join(differences)}; "
            "set them back, or train without --resume to start a new run"
        )
    done = checkpoint["epoch"]
    if current["NB_EPOCH"] <= done:
        raise ConfigError(f"the run in {path} has already trained {done} epochs; pass NB_EPOCH={done + 1} or more to train longer")
    return {**saved, **{name: current[name] for name in RESUMABLE_CHANGES}}


def open_results_folder(results: Path, hyperparameters_file: Path, hyperparameters: dict, checkpoint: dict | None) -> None:
    """Make `results` ready for writing and save the run's hyperparameters in it.

    A new run moves an earlier run's folder aside. A resumed run keeps the folder, deletes the
    partial checkpoints of a killed process, and drops the metrics.csv rows of epochs after its
    checkpoint, which the resumed run writes again.
    """
    if not distributed.is_main_process():
        return
    if checkpoint is None:
        moved_to = prepare_results_folder(results)
        if moved_to:
            print(f"moved the results of an earlier run to {moved_to}")
    else:
        prepare_results_folder(results, keep=True)
        for stale in results.glob(f".{CHECKPOINT_NAME}.*.tmp"):  # left by a process killed while saving
            stale.unlink()
    with reporting_write_errors(results):
        if checkpoint is not None:
            truncate_metrics(results / "metrics.csv", checkpoint["epoch"])
        write_hyperparameters(hyperparameters_file, hyperparameters, results / "hyperparameters.py")


def truncate_metrics(path: Path, last_epoch: int) -> None:
    """Keep only the metrics.csv rows of epochs up to `last_epoch`, dropping rows that are not an epoch's."""
    if not path.exists():
        return
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        fields = reader.fieldnames
        rows = [row for row in reader if (row.get("epoch") or "").isdigit() and int(row["epoch"]) <= last_epoch]
    if not fields or "epoch" not in fields:  # empty or not a metrics file: the resumed run starts a new one
        path.unlink()
        return
    rewrite_csv(path, fields, rows)


def train_epochs(task: TrainingTask, loader: BatchLoader, hyperparameters: dict, results: Path, checkpoint: dict | None) -> None:
    """Train from the epoch after `checkpoint` (or the first) to NB_EPOCH, saving a checkpoint after each epoch.

    Under torchrun every rank trains, the logged losses are averaged over the ranks, and only
    rank 0 writes grids, plots, metrics.csv and checkpoints.
    """
    history = {"epoch": {}, "iteration": {}}
    first_epoch = 1
    if checkpoint is not None:
        task.load_state_dict(checkpoint)
        history = checkpoint["history"]
        first_epoch = checkpoint["epoch"] + 1
        set_random_state(checkpoint["random_state"], loader)
        if distributed.rank() > 0:  # the checkpoint has rank 0's generators; the other ranks draw their own latent vectors
            torch.manual_seed(hyperparameters["SEED"] + distributed.rank() + 1000 * first_epoch)

    epochs = hyperparameters["NB_EPOCH"]
    main = distributed.is_main_process()
    quality = QualityMetrics()
    for epoch in range(first_epoch, epochs + 1):
        started = time.perf_counter()
        losses, first_batch = train_epoch(task, loader, epoch, epochs, results)
        seconds = time.perf_counter() - started
        images_per_second = len(loader) * loader.batch_size * distributed.world_size() / seconds
        distributed.check_replicas_identical(task.networks, epoch)
        if not main:
            continue

        for index, name in enumerate(task.loss_names):
            history["iteration"].setdefault(name, []).extend(losses[:, index].tolist())
            history["epoch"].setdefault(name, []).append(losses[:, index].mean().item())
        with reporting_write_errors(results):
            summary = task.end_epoch(epoch, {name: values[-1] for name, values in history["epoch"].items()}, first_batch, results)
            for name, value in summary.losses.items():
                history["epoch"].setdefault(name, []).append(value)
            if metrics_due(hyperparameters, epoch):
                quality.measure(task, epoch, final=epoch == epochs, history=history, results=results, columns=summary.columns)
            save_loss_plot(history["epoch"], history["iteration"], results / "losses.png")
            append_metrics_row(results / "metrics.csv", {
                "epoch": epoch,
                **{column_name(name): f"{values[-1]:.6f}" for name, values in history["epoch"].items()},
                **summary.columns,
                "seconds": f"{seconds:.2f}",
                "images_per_second": f"{images_per_second:.1f}",
            })
        save_atomically({
            "model": task.name,
            "epoch": epoch,
            **task.state_dict(),
            "history": history,
            "hyperparameters": hyperparameters,
            "random_state": get_random_state(loader),
        }, results / CHECKPOINT_NAME)
        progress.checkpoint, progress.epoch = results / CHECKPOINT_NAME, epoch
        tqdm.write(f"epoch {epoch}/{epochs}: {summary.text}, {seconds:.1f} s, {images_per_second:.0f} images/s")

    distributed.report_finished()
    if main:
        with reporting_write_errors(results):
            task.finish(results, epochs)


def metrics_due(hyperparameters: dict, epoch: int) -> bool:
    """Return True when the quality metrics are measured after `epoch`: every METRICS_EVERY epochs and after the last one."""
    if hyperparameters["METRICS_SAMPLES"] == 0:
        return False
    every = hyperparameters["METRICS_EVERY"]
    return epoch == hyperparameters["NB_EPOCH"] or (every > 0 and epoch % every == 0)


class QualityMetrics:
    """The quality metrics of a training run: the evaluator, built on first use, and metrics.png."""

    def __init__(self):
        self.evaluator = None
        self.disabled = False

    def measure(self, task: TrainingTask, epoch: int, final: bool, history: dict, results: Path, columns: dict[str, str]) -> None:
        """Measure the task's samples, print one line, and add the values to `history`, `columns` and metrics.png."""
        from common.metrics import save_metrics_plot

        if self.disabled:
            return
        if self.evaluator is None:
            try:
                self.evaluator = task.build_evaluator()
            except UserError as error:  # a dataset too small to measure against must not stop the training
                tqdm.write(f"warning: quality metrics skipped for this run: {error}")
                self.disabled = True
                return
        # The Inception FID takes minutes on a CPU, so only the last epoch computes it (when its weights are on disk).
        values = task.measure(self.evaluator, include_inception=final)
        tqdm.write(self.evaluator.describe(values))
        history.setdefault("metrics", []).append({"epoch": epoch, **values})
        columns.update({name: f"{value:.6g}" for name, value in values.items()})
        save_metrics_plot(history["metrics"], self.evaluator.floor, results / "metrics.png", title=f"{task.name}, {self.evaluator.feature_label}")


def train_epoch(task: TrainingTask, loader: BatchLoader, epoch: int, epochs: int, results: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Train one epoch with a progress bar.

    Return the losses as an iterations x losses tensor and the epoch's first batch of images.
    """
    losses = []
    first_batch = None
    started = time.perf_counter()
    # disable=None hides the bar when stderr is no terminal (a log file, CI), leaving the one line per epoch.
    # Under torchrun only rank 0 shows it.
    disable = None if distributed.is_main_process() else True
    progress = tqdm(loader, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False, dynamic_ncols=True, disable=disable)
    for iteration, (images, labels) in enumerate(progress, start=1):
        if first_batch is None:
            first_batch = images
        losses.append(task.train_iteration(images, labels))
        if iteration % 20 == 0 or iteration == len(loader):
            recent = distributed.average(torch.stack(losses[-20:]))  # so every rank stops together on a NaN
            check_finite_losses(recent, task.loss_names, task.name, epoch, iteration - len(recent) + 1, results)
            rate = iteration * loader.batch_size / (time.perf_counter() - started)
            recent_means = "  ".join(f"{name} {value:.3f}" for name, value in zip(task.loss_names[:2], recent.mean(0).tolist()))
            progress.set_postfix_str(f"{recent_means}  {rate:.0f} img/s")
    return distributed.average(torch.stack(losses)).cpu(), first_batch


def column_name(name: str) -> str:
    """Return the metrics.csv column of a loss: "test negative ELBO" -> "test_negative_elbo"."""
    return name.replace(" ", "_").lower()


def get_random_state(loader: BatchLoader) -> dict:
    """Return the state of every random number generator the training draws from, as tensors and lists."""
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]),
        "numpy": [keys.tolist(), position, has_gauss, cached_gaussian],
        "torch": torch.get_rng_state(),
        "shuffle": loader.shuffle_generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: dict, loader: BatchLoader) -> None:
    """Restore the generators saved by get_random_state."""
    random.setstate((3, tuple(state["python"]), None))
    keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state(("MT19937", np.array(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(state["torch"])
    loader.shuffle_generator.set_state(state["shuffle"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_finite_losses(losses: torch.Tensor, loss_names: list[str], model_name: str, epoch: int, first_iteration: int, results: Path) -> None:
    """Stop the run with one line when a value in `losses` (iterations x loss_names) is NaN or infinite.

    Row 0 of `losses` is iteration `first_iteration` of `epoch`. The message names the first bad
    loss, its epoch and iteration, and the last checkpoint saved in `results`, which stays as it was.
    """
    bad = (~torch.isfinite(losses)).nonzero()
    if len(bad) == 0:
        return
    row, column = bad[0].tolist()
    checkpoint = Path(results) / CHECKPOINT_NAME
    checkpoint_note = f"the last good checkpoint is {checkpoint}" if checkpoint.exists() else "no checkpoint was saved yet"
    value = losses[row, column].item()
    raise UserError(
        f"{model_name}: the {loss_names[column]} became {value} at epoch {epoch}, iteration {first_iteration + row}; "
        f"{checkpoint_note}. Try a lower LEARNING_RATE"
    )
