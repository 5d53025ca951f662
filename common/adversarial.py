"""Adversarial training shared by the GANs: one loop, with the loss passed in by each model.

An iteration takes one batch of real images, makes NB_DISCRIMINATOR_STEP discriminator updates,
each against freshly generated images, then NB_GENERATOR_STEP generator updates.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from common import distributed
from common.data import BatchLoader, ImageSet, load_dataset, load_training_set
from common.errors import ConfigError
from common.outputs import save_grid, save_labelled_grid, save_progress_gif
from common.precision import Precision
from common.training import EpochSummary, describe_devices, open_results_folder, start_run, train_epochs

# A score loss compares the discriminator's raw scores with per-sample targets and returns a scalar.
ScoreLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Soft targets for label smoothing, which keeps the discriminator from growing overconfident
# (one-sided smoothing of the real targets: Salimans et al. 2016).
REAL_TARGET_RANGE = (0.7, 1.0)
FAKE_TARGET_RANGE = (0.0, 0.3)


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
    """The two networks, their Adam optimizers and the discriminator and generator updates.

    The updates run in `precision`, by default the resolved PRECISION (fp32 when the hyperparameters
    have none). `generate` always runs in fp32, so the grids show what the saved fp32 weights produce.
    """

    def __init__(self, model: GANModel, generator: nn.Module, discriminator: nn.Module, hyperparameters: dict, device: torch.device, precision: Precision | None = None):
        self.precision = precision or Precision.for_device(hyperparameters.get("PRECISION", "fp32"), device)
        self.generator = self.precision.prepare_network(generator.to(device))
        self.discriminator = self.precision.prepare_network(discriminator.to(device))
        # The updates run through these; under torchrun they are DistributedDataParallel wrappers that average gradients.
        self.generator_update = distributed.wrap(self.generator)
        self.discriminator_update = distributed.wrap(self.discriminator)
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

    @staticmethod
    def run(network: nn.Module, inputs: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Run a network on its inputs, with the class labels as second argument for a conditional model."""
        return network(inputs) if labels is None else network(inputs, labels)

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
        with self.precision.autocast():
            with torch.no_grad():
                fake_images = self.run(self.generator, self.sample_latent(count), fake_labels)
            real_scores = self.run(self.discriminator_update, real_images, real_labels)
            fake_scores = self.run(self.discriminator_update, fake_images, fake_labels)
        loss = self.score_loss(real_scores, self.targets(len(real_scores), real=True))
        loss = loss + self.score_loss(fake_scores, self.targets(len(fake_scores), real=False))

        self.discriminator_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.discriminator_optimizer.step()
        return loss.detach()

    def generator_step(self, count: int) -> torch.Tensor:
        """Update the generator so the discriminator scores its images as real (target 1, never smoothed)."""
        # Gradients flow through the discriminator but its weights need none, which saves a third of its backward pass.
        # It runs unwrapped, because DistributedDataParallel expects a gradient for every weight it wraps.
        self.discriminator.requires_grad_(False)
        labels = self.sample_labels(count)
        with self.precision.autocast():
            scores = self.run(self.discriminator, self.run(self.generator_update, self.sample_latent(count), labels), labels)
        loss = self.score_loss(scores, torch.ones_like(scores))

        self.generator_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.generator_optimizer.step()
        self.discriminator.requires_grad_(True)
        return loss.detach()

    def train_iteration(self, real_images: torch.Tensor, real_labels: torch.Tensor) -> torch.Tensor:
        """Run one iteration on a batch; return its mean discriminator and generator losses as a 2-element tensor."""
        real_images = self.precision.prepare_images(real_images)
        discriminator_losses = [self.discriminator_step(real_images, real_labels) for _ in range(self.discriminator_steps)]
        generator_losses = [self.generator_step(len(real_images)) for _ in range(self.generator_steps)]
        return torch.stack([torch.stack(discriminator_losses).mean(), torch.stack(generator_losses).mean()])

    @torch.no_grad()
    def generate(self, latent: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Generate images in evaluation mode (batch norm running statistics, no dropout)."""
        self.generator.eval()
        images = self.run(self.generator, latent, labels)
        self.generator.train()
        return images

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "generator_optimizer": self.generator_optimizer.state_dict(),
            "discriminator_optimizer": self.discriminator_optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.generator_optimizer.load_state_dict(state["generator_optimizer"])
        self.discriminator_optimizer.load_state_dict(state["discriminator_optimizer"])


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


class GANTraining:
    """A GAN's part in the shared epoch loop of common.training: its trainer and the fixed sample grid."""

    loss_names = ["discriminator loss", "generator loss"]

    def __init__(self, model: GANModel, trainer: AdversarialTrainer, grid: SampleGrid, hyperparameters: dict, train_set: ImageSet):
        self.name = model.name
        self.trainer = trainer
        self.networks = {"generator": trainer.generator, "discriminator": trainer.discriminator}
        self.grid = grid
        self.hyperparameters = hyperparameters
        self.train_set = train_set
        self.image_channels = train_set.images.shape[1]
        self.class_names = train_set.class_names

    def train_iteration(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.trainer.train_iteration(images, labels)

    def end_epoch(self, epoch: int, mean_losses: dict[str, float], first_batch: torch.Tensor, results: Path) -> EpochSummary:
        self.grid.save(self.trainer, results / f"gen_epoch_{epoch}.png")
        save_grid(first_batch[: self.grid.columns**2], results / "real" / f"epoch_{epoch}.png", self.grid.columns)
        return EpochSummary(", ".join(f"{name} {mean_losses[name]:.4f}" for name in self.loss_names))

    def state_dict(self) -> dict:
        return {
            **self.trainer.state_dict(),
            "image_channels": self.image_channels,
            "class_names": self.class_names,
            "fixed_latent": self.grid.latent.cpu(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.trainer.load_state_dict(state)
        self.grid.latent = state["fixed_latent"].to(self.trainer.device)

    def build_evaluator(self):
        from common.metrics import Evaluator

        return Evaluator(self.hyperparameters, self.trainer.device, load_dataset(self.hyperparameters, train=False), self.train_set)

    def measure(self, evaluator, include_inception: bool) -> dict[str, float]:
        return measure_generator(self.trainer.generate, self.trainer.generator.latent_size, self.trainer.label_count is not None, evaluator, include_inception)

    def finish(self, results: Path, epochs: int) -> None:
        torch.save(self.trainer.generator.state_dict(), results / "generator_end.pt")
        torch.save(self.trainer.discriminator.state_dict(), results / "discriminator_end.pt")
        save_progress_gif([results / f"gen_epoch_{epoch}.png" for epoch in range(1, epochs + 1)], results / "progress.gif")


def train_gan(model: GANModel, hyperparameters: dict, hyperparameters_file: Path, results: Path, resume: bool = False) -> None:
    """Train a GAN for NB_EPOCH epochs, or resume its run, writing grids, plots, metrics and checkpoints into `results`."""
    hyperparameters, checkpoint, device = start_run(model.name, hyperparameters, results, resume)
    train_set = load_training_set(hyperparameters)
    check_labels(model, train_set, hyperparameters)
    loader = BatchLoader(train_set, hyperparameters["MINIBATCH_SIZE"], device, hyperparameters["SEED"], distributed.rank(), distributed.world_size())
    if loader.batch_size // hyperparameters["PACKING"] < 2:
        raise ConfigError(
            f"the training set has {len(train_set.images)} images, too few for PACKING={hyperparameters['PACKING']}: "
            "batch norm needs at least 2 packs per batch; lower PACKING or add images"
        )
    image_channels = train_set.images.shape[1]
    generator, discriminator = model.build_networks(hyperparameters, image_channels)
    trainer = AdversarialTrainer(model, generator, discriminator, hyperparameters, device)
    grid = SampleGrid.draw(trainer, hyperparameters["NB_IMAGE_TO_GENERATE"], train_set.class_names)

    open_results_folder(results, hyperparameters_file, hyperparameters, checkpoint)
    action = f"resuming after epoch {checkpoint['epoch']}" if checkpoint else "training"
    print(
        f"{model.name}: {action} on {len(train_set.images)} {hyperparameters['DATASET_NAME']} images on {describe_devices(device)} in {trainer.precision.name}, "
        f"seed {hyperparameters['SEED']}, results in {results}"
    )
    train_epochs(GANTraining(model, trainer, grid, hyperparameters, train_set), loader, hyperparameters, results, checkpoint)
    print(f"done: samples, plots and networks are in {results}")


def measure_generator(generate: Callable, latent_size: int, conditional: bool, evaluator, include_inception: bool) -> dict[str, float]:
    """Measure the samples of `generate(latent, labels)` with a common.metrics Evaluator; the evaluator seeds the latent vectors."""
    device = evaluator.device
    if conditional:
        return evaluator.evaluate_conditional(lambda labels: generate(torch.randn(len(labels), latent_size, device=device), labels), include_inception)
    return evaluator.evaluate(lambda count: generate(torch.randn(count, latent_size, device=device), None), include_inception)


def check_labels(model: GANModel, train_set: ImageSet, hyperparameters: dict) -> None:
    """Stop when a conditional model gets an unlabelled training set, or NUMBER_LABELS differs from its class count."""
    if not model.conditional:
        return
    if len(train_set.class_names) < 2:
        raise ConfigError(
            f"invalid hyperparameter DATASET_NAME={hyperparameters['DATASET_NAME']!r}: {model.name} needs a labelled dataset, "
            f"but this one has a single class ({train_set.class_names[0]}); put the images in one subfolder per class, "
            "at least 2, or use MNIST or FASHIONMNIST"
        )
    if len(train_set.class_names) != hyperparameters["NUMBER_LABELS"]:
        raise ConfigError(
            f"invalid hyperparameter NUMBER_LABELS={hyperparameters['NUMBER_LABELS']}: "
            f"{hyperparameters['DATASET_NAME']} has {len(train_set.class_names)} classes, so set NUMBER_LABELS={len(train_set.class_names)}"
        )
