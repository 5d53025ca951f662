"""Adversarial training shared by the GANs: one loop, with the loss passed in by each model.

An iteration takes one batch of real images, makes NB_DISCRIMINATOR_STEP discriminator updates,
each against freshly generated images, then NB_GENERATOR_STEP generator updates.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from common.checkpoints import save_atomically
from common.config import write_hyperparameters
from common.data import BatchLoader, ImageSet, load_dataset
from common.errors import ConfigError, UserError
from common.outputs import (
    append_metrics_row,
    prepare_results_folder,
    reporting_write_errors,
    save_grid,
    save_labelled_grid,
    save_loss_plot,
    save_progress_gif,
)
from common.runtime import seed_everything, select_device
from common.training import check_finite_losses

# A score loss compares the discriminator's raw scores with per-sample targets and returns a scalar.
ScoreLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Soft targets for label smoothing, which keeps the discriminator from growing overconfident
# (one-sided smoothing of the real targets: Salimans et al. 2016).
REAL_TARGET_RANGE = (0.7, 1.0)
FAKE_TARGET_RANGE = (0.0, 0.3)
LOSS_NAMES = ("discriminator", "generator")


@dataclass
class GANModel:
    """A GAN script's part in the shared loop: its name, networks and loss."""

    name: str
    # Build the initialised generator and discriminator from the hyperparameters and the image channel count.
    build_networks: Callable[[dict, int], tuple[nn.Module, nn.Module]]
    score_loss: ScoreLoss
    # A conditional model's networks take class labels as a second argument (NUMBER_LABELS classes).
    conditional: bool = False


class AdversarialTrainer:
    """The two networks, their Adam optimizers and the discriminator and generator updates."""

    def __init__(self, model: GANModel, generator: nn.Module, discriminator: nn.Module, hyperparameters: dict, device: torch.device):
        self.generator = generator.to(device)
        self.discriminator = discriminator.to(device)
        self.score_loss = model.score_loss
        self.label_count = hyperparameters["NUMBER_LABELS"] if model.conditional else None
        self.device = device
        self.discriminator_steps = hyperparameters["NB_DISCRIMINATOR_STEP"]
        self.generator_steps = hyperparameters["NB_GENERATOR_STEP"]
        self.smooth_real = hyperparameters["REAL_LABEL_SMOOTHING"]
        self.smooth_fake = hyperparameters["FAKE_LABEL_SMOOTHING"]

        adam = dict(lr=hyperparameters["LEARNING_RATE"], betas=(hyperparameters["BETA1"], hyperparameters["BETA2"]))
        self.generator_optimizer = torch.optim.Adam(self.generator.parameters(), **adam)
        self.discriminator_optimizer = torch.optim.Adam(self.discriminator.parameters(), **adam)

    def sample_latent(self, count: int) -> torch.Tensor:
        return torch.randn(count, self.generator.latent_size, device=self.device)

    def sample_labels(self, count: int) -> torch.Tensor | None:
        """Draw class labels uniformly for generated images, or None for an unconditional model."""
        if self.label_count is None:
            return None
        return torch.randint(0, self.label_count, (count,), device=self.device)

    def run_generator(self, latent: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.generator(latent) if labels is None else self.generator(latent, labels)

    def run_discriminator(self, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.discriminator(images) if labels is None else self.discriminator(images, labels)

    def targets(self, count: int, real: bool) -> torch.Tensor:
        """Return the discriminator's targets: 1 for real and 0 for fake, or soft values drawn uniformly when smoothing is on."""
        smooth, (low, high) = (self.smooth_real, REAL_TARGET_RANGE) if real else (self.smooth_fake, FAKE_TARGET_RANGE)
        if smooth:
            return torch.empty(count, device=self.device).uniform_(low, high)
        return torch.full((count,), 1.0 if real else 0.0, device=self.device)

    def discriminator_step(self, real_images: torch.Tensor, real_labels: torch.Tensor) -> torch.Tensor:
        """Update the discriminator to score real images as real and generated ones as fake."""
        count = len(real_images)
        if self.label_count is None:
            real_labels = None
        fake_labels = self.sample_labels(count)
        with torch.no_grad():
            fake_images = self.run_generator(self.sample_latent(count), fake_labels)
        real_scores = self.run_discriminator(real_images, real_labels)
        fake_scores = self.run_discriminator(fake_images, fake_labels)
        loss = self.score_loss(real_scores, self.targets(len(real_scores), real=True))
        loss = loss + self.score_loss(fake_scores, self.targets(len(fake_scores), real=False))

        self.discriminator_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.discriminator_optimizer.step()
        return loss.detach()

    def generator_step(self, count: int) -> torch.Tensor:
        """Update the generator so the discriminator scores its images as real (target 1, never smoothed)."""
        # Gradients flow through the discriminator but its weights need none, which saves a third of its backward pass.
        self.discriminator.requires_grad_(False)
        labels = self.sample_labels(count)
        scores = self.run_discriminator(self.run_generator(self.sample_latent(count), labels), labels)
        loss = self.score_loss(scores, torch.ones_like(scores))

        self.generator_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.generator_optimizer.step()
        self.discriminator.requires_grad_(True)
        return loss.detach()

    def train_iteration(self, real_images: torch.Tensor, real_labels: torch.Tensor) -> torch.Tensor:
        """Run one iteration on a batch; return its mean discriminator and generator losses as a 2-element tensor."""
        discriminator_losses = [self.discriminator_step(real_images, real_labels) for _ in range(self.discriminator_steps)]
        generator_losses = [self.generator_step(len(real_images)) for _ in range(self.generator_steps)]
        return torch.stack([torch.stack(discriminator_losses).mean(), torch.stack(generator_losses).mean()])

    @torch.no_grad()
    def generate(self, latent: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Generate images in evaluation mode (batch norm running statistics, no dropout)."""
        self.generator.eval()
        images = self.run_generator(latent, labels)
        self.generator.train()
        return images

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "generator_optimizer": self.generator_optimizer.state_dict(),
            "discriminator_optimizer": self.discriminator_optimizer.state_dict(),
        }


@dataclass
class SampleGrid:
    """The fixed latent batch behind every epoch's sample grid, and how the grid is laid out."""

    latent: torch.Tensor
    labels: torch.Tensor | None
    columns: int
    row_names: list[str] | None  # class names written beside the rows of a conditional grid

    @classmethod
    def draw(cls, trainer: AdversarialTrainer, columns: int, class_names: list[str]) -> "SampleGrid":
        """Draw columns x columns latent vectors, or for a conditional model one latent vector per column, repeated for every class row."""
        if trainer.label_count is None:
            return cls(trainer.sample_latent(columns**2), None, columns, None)
        latent = trainer.sample_latent(columns).repeat(trainer.label_count, 1)  # row i, column j: latent vector j
        labels = torch.arange(trainer.label_count, device=trainer.device).repeat_interleave(columns)  # row i: class i
        return cls(latent, labels, columns, class_names)

    def save(self, trainer: AdversarialTrainer, path: Path) -> None:
        images = trainer.generate(self.latent, self.labels)
        if self.row_names is None:
            save_grid(images, path, self.columns)
        else:
            save_labelled_grid(images, path, self.columns, self.row_names)


def train_gan(model: GANModel, hyperparameters: dict, hyperparameters_file: Path, results: Path) -> None:
    """Train a GAN for NB_EPOCH epochs, writing grids, plots, metrics and checkpoints into `results`."""
    device = select_device(hyperparameters["DEVICE"])
    seed = seed_everything(hyperparameters["SEED"])
    train_set = load_training_set(hyperparameters)
    if model.conditional and len(train_set.class_names) < 2:
        raise ConfigError(
            f"invalid hyperparameter DATASET_NAME={hyperparameters['DATASET_NAME']!r}: {model.name} needs a labelled dataset, "
            f"but this one has a single class ({train_set.class_names[0]}); put the images in one subfolder per class, "
            "at least 2, or use MNIST or FASHIONMNIST"
        )
    if model.conditional and len(train_set.class_names) != hyperparameters["NUMBER_LABELS"]:
        raise ConfigError(
            f"invalid hyperparameter NUMBER_LABELS={hyperparameters['NUMBER_LABELS']}: "
            f"{hyperparameters['DATASET_NAME']} has {len(train_set.class_names)} classes, so set NUMBER_LABELS={len(train_set.class_names)}"
        )
    loader = BatchLoader(train_set, hyperparameters["MINIBATCH_SIZE"], device, seed)
    if loader.batch_size // hyperparameters["PACKING"] < 2:
        raise ConfigError(
            f"the training set has {len(train_set.images)} images, too few for PACKING={hyperparameters['PACKING']}: "
            "batch norm needs at least 2 packs per batch; lower PACKING or add images"
        )
    image_channels = train_set.images.shape[1]
    generator, discriminator = model.build_networks(hyperparameters, image_channels)
    trainer = AdversarialTrainer(model, generator, discriminator, hyperparameters, device)

    moved_to = prepare_results_folder(results)
    if moved_to:
        print(f"moved the results of an earlier run to {moved_to}")
    hyperparameters = {**hyperparameters, "SEED": seed}  # a drawn seed is saved, so the run can be repeated
    with reporting_write_errors(results):
        write_hyperparameters(hyperparameters_file, hyperparameters, results / "hyperparameters.py")
    print(f"{model.name}: {len(train_set.images)} {hyperparameters['DATASET_NAME']} training images on {device}, seed {seed}, results in {results}")

    grid = SampleGrid.draw(trainer, hyperparameters["NB_IMAGE_TO_GENERATE"], train_set.class_names)
    history = {"epoch": {name: [] for name in LOSS_NAMES}, "iteration": {name: [] for name in LOSS_NAMES}}
    epochs = hyperparameters["NB_EPOCH"]
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        epoch_losses, first_batch = train_epoch(trainer, loader, epoch, epochs, model.name, results)
        seconds = time.perf_counter() - started

        for index, name in enumerate(LOSS_NAMES):
            history["iteration"][name] += epoch_losses[:, index].tolist()
            history["epoch"][name].append(epoch_losses[:, index].mean().item())
        with reporting_write_errors(results):
            grid.save(trainer, results / f"gen_epoch_{epoch}.png")
            save_grid(first_batch[: grid.columns**2], results / "real" / f"epoch_{epoch}.png", grid.columns)
            save_loss_plot(history["epoch"], history["iteration"], results / "losses.png")
            log_epoch(results, epoch, epochs, {name: history["epoch"][name][-1] for name in LOSS_NAMES}, seconds, len(loader) * loader.batch_size)
        save_atomically({
            "model": model.name,
            "epoch": epoch,
            **trainer.state_dict(),
            "image_channels": image_channels,
            "class_names": train_set.class_names,
            "fixed_latent": grid.latent.cpu(),
            "history": history,
            "hyperparameters": hyperparameters,
        }, results / "checkpoint.pt")

    with reporting_write_errors(results):
        torch.save(trainer.generator.state_dict(), results / "generator_end.pt")
        torch.save(trainer.discriminator.state_dict(), results / "discriminator_end.pt")
        save_progress_gif([results / f"gen_epoch_{epoch}.png" for epoch in range(1, epochs + 1)], results / "progress.gif")
    print(f"done: samples, plots and networks are in {results}")


def log_epoch(results: Path, epoch: int, epochs: int, mean_losses: dict[str, float], seconds: float, image_count: int) -> None:
    """Append the epoch's row to metrics.csv and print its one log line."""
    images_per_second = image_count / seconds
    append_metrics_row(results / "metrics.csv", {
        "epoch": epoch,
        "generator_loss": f"{mean_losses['generator']:.6f}",
        "discriminator_loss": f"{mean_losses['discriminator']:.6f}",
        "seconds": f"{seconds:.2f}",
        "images_per_second": f"{images_per_second:.1f}",
    })
    tqdm.write(
        f"epoch {epoch}/{epochs}: discriminator loss {mean_losses['discriminator']:.4f}, "
        f"generator loss {mean_losses['generator']:.4f}, {seconds:.1f} s, {images_per_second:.0f} images/s"
    )


def load_training_set(hyperparameters: dict) -> ImageSet:
    """Load the training images at the requested size and channels, keeping the first MAX_TRAIN_IMAGES."""
    train_set = load_dataset(hyperparameters, train=True)
    limit = hyperparameters["MAX_TRAIN_IMAGES"]
    if limit is not None:
        train_set = ImageSet(train_set.images[:limit], train_set.labels[:limit], train_set.class_names)
    return train_set


def train_epoch(trainer: AdversarialTrainer, loader: BatchLoader, epoch: int, epochs: int, model_name: str, results: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Train one epoch with a progress bar.

    Return the losses as an iterations x 2 tensor (discriminator, generator) and the epoch's first
    batch of real images, for the grid of training images.
    """
    losses = []
    first_batch = None
    started = time.perf_counter()
    # disable=None hides the bar when stderr is no terminal (a log file, CI), leaving the one line per epoch.
    progress = tqdm(loader, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False, dynamic_ncols=True, disable=None)
    for iteration, (real_images, real_labels) in enumerate(progress, start=1):
        if first_batch is None:
            first_batch = real_images
        losses.append(trainer.train_iteration(real_images, real_labels))
        if iteration % 20 == 0 or iteration == len(loader):
            recent = torch.stack(losses[-20:])
            check_finite(recent, model_name, epoch, iteration - len(recent) + 1, results)
            discriminator_loss, generator_loss = recent.mean(0).tolist()
            rate = iteration * loader.batch_size / (time.perf_counter() - started)
            progress.set_postfix_str(f"D {discriminator_loss:.3f}  G {generator_loss:.3f}  {rate:.0f} img/s")
    return torch.stack(losses).cpu(), first_batch


def check_finite(losses: torch.Tensor, model_name: str, epoch: int, first_iteration: int, results: Path) -> None:
    """Stop the run with one line when a loss in `losses` (iterations x 2) is NaN or infinite."""
    check_finite_losses(losses, [f"{name} loss" for name in LOSS_NAMES], model_name, epoch, first_iteration, results)
