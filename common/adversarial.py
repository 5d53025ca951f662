"""Adversarial training shared by the GANs: one loop, with the loss passed in by each model.

An iteration takes one batch of real images, makes NB_DISCRIMINATOR_STEP discriminator updates,
each against freshly generated images, then NB_GENERATOR_STEP generator updates.
"""

import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from common.checkpoints import save_atomically
from common.config import write_hyperparameters
from common.data import BatchLoader, ImageSet, load_images
from common.errors import UserError
from common.networks import Discriminator, Generator, initialise_weights, pack
from common.outputs import append_metrics_row, prepare_results_folder, save_grid, save_loss_plot, save_progress_gif
from common.runtime import seed_everything, select_device
from common.training import check_finite_losses

# A score loss compares the discriminator's raw scores with per-sample targets and returns a scalar.
ScoreLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Soft targets for one-sided or two-sided label smoothing (Salimans et al. 2016).
REAL_TARGET_RANGE = (0.7, 1.0)
FAKE_TARGET_RANGE = (0.0, 0.3)
LOSS_NAMES = ("discriminator", "generator")


class AdversarialTrainer:
    """The two networks, their Adam optimizers and the discriminator and generator updates."""

    def __init__(self, generator: Generator, discriminator: Discriminator, score_loss: ScoreLoss, hyperparameters: dict, device: torch.device):
        self.generator = generator.to(device)
        self.discriminator = discriminator.to(device)
        self.score_loss = score_loss
        self.device = device
        self.packing = hyperparameters["PACKING"]
        self.discriminator_steps = hyperparameters["NB_DISCRIMINATOR_STEP"]
        self.generator_steps = hyperparameters["NB_GENERATOR_STEP"]
        self.smooth_real = hyperparameters["REAL_LABEL_SMOOTHING"]
        self.smooth_fake = hyperparameters["FAKE_LABEL_SMOOTHING"]

        adam = dict(lr=hyperparameters["LEARNING_RATE"], betas=(hyperparameters["BETA1"], hyperparameters["BETA2"]))
        self.generator_optimizer = torch.optim.Adam(self.generator.parameters(), **adam)
        self.discriminator_optimizer = torch.optim.Adam(self.discriminator.parameters(), **adam)

    def sample_latent(self, count: int) -> torch.Tensor:
        return torch.randn(count, self.generator.latent_size, device=self.device)

    def targets(self, count: int, real: bool) -> torch.Tensor:
        """Return the discriminator's targets: 1 for real and 0 for fake, or soft values drawn uniformly when smoothing is on."""
        smooth, (low, high) = (self.smooth_real, REAL_TARGET_RANGE) if real else (self.smooth_fake, FAKE_TARGET_RANGE)
        if smooth:
            return torch.empty(count, device=self.device).uniform_(low, high)
        return torch.full((count,), 1.0 if real else 0.0, device=self.device)

    def discriminator_step(self, real_images: torch.Tensor) -> torch.Tensor:
        """Update the discriminator to score real images as real and generated ones as fake."""
        with torch.no_grad():
            fake_images = self.generator(self.sample_latent(len(real_images)))
        real_scores = self.discriminator(pack(real_images, self.packing))
        fake_scores = self.discriminator(pack(fake_images, self.packing))
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
        scores = self.discriminator(pack(self.generator(self.sample_latent(count)), self.packing))
        loss = self.score_loss(scores, torch.ones_like(scores))

        self.generator_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.generator_optimizer.step()
        self.discriminator.requires_grad_(True)
        return loss.detach()

    def train_iteration(self, real_images: torch.Tensor) -> torch.Tensor:
        """Run one iteration on a batch; return its mean discriminator and generator losses as a 2-element tensor."""
        discriminator_loss = torch.stack([self.discriminator_step(real_images) for _ in range(self.discriminator_steps)]).mean()
        generator_loss = torch.stack([self.generator_step(len(real_images)) for _ in range(self.generator_steps)]).mean()
        return torch.stack([discriminator_loss, generator_loss])

    @torch.no_grad()
    def generate(self, latent: torch.Tensor) -> torch.Tensor:
        """Generate images in evaluation mode (batch norm running statistics, no dropout)."""
        self.generator.eval()
        images = self.generator(latent)
        self.generator.train()
        return images

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "generator_optimizer": self.generator_optimizer.state_dict(),
            "discriminator_optimizer": self.discriminator_optimizer.state_dict(),
        }


def build_trainer(hyperparameters: dict, image_channels: int, score_loss: ScoreLoss, device: torch.device) -> AdversarialTrainer:
    """Create and initialise the DCGAN networks for `image_channels`-channel images and wrap them in a trainer."""
    size, width = hyperparameters["IMAGE_SIZE"], hyperparameters["COMPLEXITY"]
    generator = Generator(hyperparameters["LATENT_INPUT"], image_channels, size, width, hyperparameters["DROPOUT_PROB"])
    discriminator = Discriminator(image_channels * hyperparameters["PACKING"], size, width)
    for network in (generator, discriminator):
        initialise_weights(network, hyperparameters["WEIGHTS_MEAN"], hyperparameters["WEIGHTS_STD"])
    return AdversarialTrainer(generator, discriminator, score_loss, hyperparameters, device)


def train_gan(model_name: str, score_loss: ScoreLoss, hyperparameters: dict, hyperparameters_file: Path, results: Path) -> None:
    """Train a GAN for NB_EPOCH epochs, writing grids, plots, metrics and checkpoints into `results`."""
    device = select_device(hyperparameters["DEVICE"])
    seed = seed_everything(hyperparameters["SEED"])
    train_set = load_training_set(hyperparameters)
    loader = BatchLoader(train_set, hyperparameters["MINIBATCH_SIZE"], device, seed)
    if loader.batch_size // hyperparameters["PACKING"] < 2:
        raise UserError(
            f"the training set has {len(train_set.images)} images, too few for PACKING={hyperparameters['PACKING']}: "
            "batch norm needs at least 2 packs per batch; lower PACKING or add images"
        )
    trainer = build_trainer(hyperparameters, train_set.images.shape[1], score_loss, device)

    moved_to = prepare_results_folder(results)
    if moved_to:
        print(f"moved the results of an earlier run to {moved_to}")
    write_hyperparameters(hyperparameters_file, hyperparameters, results / "hyperparameters.py")
    print(f"{model_name}: {len(train_set.images)} {hyperparameters['DATASET_NAME']} images on {device}, seed {seed}, results in {results}")

    grid_columns = hyperparameters["NB_IMAGE_TO_GENERATE"]
    fixed_latent = trainer.sample_latent(grid_columns**2)  # the same latent batch for every epoch's grid
    history = {"epoch": {name: [] for name in LOSS_NAMES}, "iteration": {name: [] for name in LOSS_NAMES}}
    epochs = hyperparameters["NB_EPOCH"]

    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        epoch_losses, first_batch = train_epoch(trainer, loader, epoch, epochs, model_name, results)
        seconds = time.perf_counter() - started
        images_per_second = len(loader) * loader.batch_size / seconds

        for index, name in enumerate(LOSS_NAMES):
            history["iteration"][name] += epoch_losses[:, index].tolist()
            history["epoch"][name].append(epoch_losses[:, index].mean().item())
        means = {name: history["epoch"][name][-1] for name in LOSS_NAMES}

        save_grid(trainer.generate(fixed_latent), results / f"gen_epoch_{epoch}.png", grid_columns)
        save_grid(first_batch[: grid_columns**2], results / "real" / f"epoch_{epoch}.png", grid_columns)
        save_loss_plot(history["epoch"], history["iteration"], results / "losses.png")
        append_metrics_row(results / "metrics.csv", {
            "epoch": epoch,
            "generator_loss": f"{means['generator']:.6f}",
            "discriminator_loss": f"{means['discriminator']:.6f}",
            "seconds": f"{seconds:.2f}",
            "images_per_second": f"{images_per_second:.1f}",
        })
        save_atomically({
            "model": model_name,
            "epoch": epoch,
            **trainer.state_dict(),
            "fixed_latent": fixed_latent.cpu(),
            "history": history,
            "hyperparameters": hyperparameters,
        }, results / "checkpoint.pt")
        tqdm.write(
            f"epoch {epoch}/{epochs}: discriminator loss {means['discriminator']:.4f}, "
            f"generator loss {means['generator']:.4f}, {seconds:.1f} s, {images_per_second:.0f} images/s"
        )

    torch.save(trainer.generator.state_dict(), results / "generator_end.pt")
    torch.save(trainer.discriminator.state_dict(), results / "discriminator_end.pt")
    save_progress_gif([results / f"gen_epoch_{epoch}.png" for epoch in range(1, epochs + 1)], results / "progress.gif")
    print(f"done: samples, plots and networks are in {results}")


def load_training_set(hyperparameters: dict) -> ImageSet:
    """Load the training images at the requested size and channels, keeping the first MAX_TRAIN_IMAGES."""
    train_set = load_images(hyperparameters["DATASET_NAME"], hyperparameters["IMAGE_SIZE"], hyperparameters["IMAGE_CHANNELS"])
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
    for iteration, (real_images, _labels) in enumerate(progress, start=1):
        if first_batch is None:
            first_batch = real_images
        losses.append(trainer.train_iteration(real_images))
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
