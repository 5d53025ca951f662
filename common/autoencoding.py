"""Training and sampling shared by the autoencoder and the VAE: one loop, with each model's loss inside the model.

A model plugged in here is an nn.Module with
- `code_size`, and `encoder` and `decoder` submodules, saved separately;
- `encode(images)`: the deterministic code of each image (the VAE's posterior mean);
- `decode(codes)`: images in [0, 1];
- `losses(images)`: a dict of losses averaged over the batch. The loop minimises the "loss"
  entry, and records, plots and writes every entry to metrics.csv for both data splits.

Both models see pixels in [0, 1], because their decoders end in a sigmoid and the VAE's Bernoulli
likelihood is defined only there: `to_unit_range` converts the loader's [-1, 1] batches, and
`save_unit_grid` converts back for the shared grid writer.
"""

import math
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import MultivariateNormal
from torchvision.transforms.functional import to_pil_image

from common import distributed
from common.data import BatchLoader, ImageSet, first_images, load_dataset, load_training_set, to_signed_float
from common.errors import UserError
from common.networks import initialise_weights
from common.outputs import save_grid, save_progress_gif
from common.precision import Precision
from common.sampling import check_requested_sizes, evaluate_checkpoint, load_model_checkpoint, prepare_generated_folder, spherical_path
from common.training import EpochSummary, describe_devices, open_results_folder, start_run, train_epochs

# A model builder gets the hyperparameters and the image channel count and returns an untrained model.
ModelBuilder = Callable[[dict, int], nn.Module]

MAX_FITTING_IMAGES = 10_000  # training images whose codes the autoencoder's Gaussian is fitted on
EVALUATION_BATCH_SIZE = 500  # images per forward pass when evaluating; only memory depends on it
INTERPOLATION_STEPS = 10  # decoded images along each latent path, both end points included


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """Map images from [-1, 1], as BatchLoader yields them, to [0, 1]."""
    return images.add(1).div_(2)


def unit_images(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Convert a uint8 batch to floats in [0, 1] on `device`."""
    return to_unit_range(to_signed_float(images.to(device)))


def save_unit_grid(images: torch.Tensor, path: Path, columns: int) -> None:
    """Save images in [0, 1] as one grid PNG, with the fixed, clamped mapping of save_grid."""
    save_grid(images * 2 - 1, path, columns)


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Run the block in evaluation mode (batch norm running statistics) without gradients, then return to training mode."""
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train()


class CodeDistribution:
    """A Gaussian N(mean, covariance) over codes, from which codes are drawn as mean + L @ noise.

    L is the Cholesky factor of the covariance and the noise is standard normal, so one fixed
    noise batch gives samples that stay comparable while the fitted Gaussian changes between epochs.
    """

    def __init__(self, mean: torch.Tensor, covariance: torch.Tensor):
        self.mean = mean.float()
        self.covariance = covariance.float()
        # The factorisation runs in float64 and fails with ValueError when the covariance is not positive definite.
        self.scale_tril = MultivariateNormal(mean.double(), covariance.double()).scale_tril.float()

    @classmethod
    def standard(cls, code_size: int) -> "CodeDistribution":
        """Return N(0, I), the VAE's prior."""
        return cls(torch.zeros(code_size), torch.eye(code_size))

    @classmethod
    def fit(cls, codes: torch.Tensor) -> "CodeDistribution":
        """Fit the mean and covariance of `codes` (count x code_size).

        A jitter of 1e-4 times the mean variance (at least 1e-6) on the diagonal keeps the
        covariance positive definite when some code dimensions are constant or linearly
        dependent, or when there are fewer codes than dimensions.
        """
        codes = codes.double()
        covariance = torch.cov(codes.T).reshape(codes.shape[1], codes.shape[1])
        jitter = 1e-6 + 1e-4 * covariance.diagonal().mean().item()
        return cls(codes.mean(0), covariance + jitter * torch.eye(codes.shape[1], dtype=codes.dtype))

    def codes_from_noise(self, noise: torch.Tensor) -> torch.Tensor:
        """Map standard normal noise (count x code_size) to codes drawn from this Gaussian."""
        return self.mean.to(noise.device) + noise @ self.scale_tril.to(noise.device).T


def load_datasets(hyperparameters: dict) -> tuple[ImageSet, ImageSet]:
    """Load the first MAX_TRAIN_IMAGES training images and the first MAX_TEST_IMAGES held-out test images."""
    train_set = load_training_set(hyperparameters)
    test_set = first_images(load_dataset(hyperparameters, train=False), hyperparameters["MAX_TEST_IMAGES"])
    return train_set, test_set


class LossOf(nn.Module):
    """A module whose forward is the model's `losses`, the call that DistributedDataParallel must wrap."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model.losses(images)


class AutoencodingTraining:
    """An autoencoding model's part in the shared epoch loop of common.training.

    With `fit_code_distribution`, generated images decode codes drawn from a Gaussian fitted to
    the training codes at each epoch's end, because a plain autoencoder's codes follow no set
    prior. Without it they decode codes drawn from N(0, I), the VAE's prior.

    Training and test losses are computed in the resolved PRECISION (fp32 when the hyperparameters
    have none). The fitted Gaussian and the grids are computed in fp32.
    """

    def __init__(self, name: str, model: nn.Module, hyperparameters: dict, train_set: ImageSet, test_set: ImageSet, device: torch.device, fit_code_distribution: bool):
        self.name = name
        self.precision = Precision.for_device(hyperparameters.get("PRECISION", "fp32"), device)
        self.model = self.precision.prepare_network(model)
        self.hyperparameters = hyperparameters
        self.networks = {"model": model}
        # The loss runs through this; under torchrun it is a DistributedDataParallel wrapper that averages gradients.
        self.loss_update = distributed.wrap(LossOf(self.model))
        self.loss_names = [f"train {name}" for name in model.loss_names]
        self.optimizer = torch.optim.Adam(model.parameters(), lr=hyperparameters["LEARNING_RATE"])
        self.train_set, self.test_set = train_set, test_set
        self.device = device
        self.fit_code_distribution = fit_code_distribution
        self.columns = hyperparameters["NB_IMAGE_TO_GENERATE"]
        self.test_batch = unit_images(test_set.images[: self.columns**2], device)  # the same held-out images in every epoch's grids
        self.fixed_noise = torch.randn(self.columns**2, model.code_size, device=device)  # the same generator input in every epoch's grid
        self.distribution = CodeDistribution.standard(model.code_size)

    def train_iteration(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with self.precision.autocast():
            losses = self.loss_update(to_unit_range(self.precision.prepare_images(images)))
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        self.optimizer.step()
        return torch.stack([losses[name].detach() for name in self.model.loss_names])

    def end_epoch(self, epoch: int, mean_losses: dict[str, float], first_batch: torch.Tensor, results: Path) -> EpochSummary:
        test_losses, test_mse = evaluate(self.model, self.test_set.images, self.device, self.precision)
        if self.fit_code_distribution:
            self.distribution = fit_distribution(self.model, self.train_set.images[:MAX_FITTING_IMAGES], self.device)
        save_epoch_grids(self.model, self.test_batch, self.distribution, self.fixed_noise, results, epoch, self.columns)
        return EpochSummary(
            text=f"training loss {mean_losses['train loss']:.4f}, test loss {test_losses['loss']:.4f}, test PSNR {psnr(test_mse):.2f} dB",
            losses={f"test {name}": value for name, value in test_losses.items()},
            columns={"test_mse": f"{test_mse:.6f}", "test_psnr": f"{psnr(test_mse):.3f}"},
        )

    def state_dict(self) -> dict:
        return {
            "encoder": self.model.encoder.state_dict(),
            "decoder": self.model.decoder.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "image_channels": self.train_set.images.shape[1],
            "fixed_noise": self.fixed_noise.cpu(),  # standard normal; the generated grid decodes code_mean + L @ noise
            "code_mean": self.distribution.mean,
            "code_covariance": self.distribution.covariance,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.encoder.load_state_dict(state["encoder"])
        self.model.decoder.load_state_dict(state["decoder"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.fixed_noise = state["fixed_noise"].to(self.device)
        self.distribution = CodeDistribution(state["code_mean"], state["code_covariance"])

    def build_evaluator(self):
        from common.metrics import Evaluator

        return Evaluator(self.hyperparameters, self.device, self.test_set, self.train_set)

    def measure(self, evaluator, include_inception: bool) -> dict[str, float]:
        return measure_decoder(self.model, self.distribution, evaluator, include_inception)

    def finish(self, results: Path, epochs: int) -> None:
        torch.save(self.model.encoder.state_dict(), results / "encoder_end.pt")
        torch.save(self.model.decoder.state_dict(), results / "decoder_end.pt")
        save_progress_gif([results / "saved_generated" / f"epoch_{epoch}.png" for epoch in range(1, epochs + 1)], results / "progress.gif")
        rows = min(self.columns, len(self.test_batch) // 2)
        save_test_interpolations(self.model, self.test_batch, results / "interpolation.png", rows)


def train_autoencoder(
    model_name: str, build_model: ModelBuilder, hyperparameters: dict, hyperparameters_file: Path, results: Path, fit_code_distribution: bool, resume: bool = False
) -> None:
    """Train an autoencoding model for NB_EPOCH epochs, or resume its run, writing grids, plots, metrics and checkpoints into `results`."""
    hyperparameters, checkpoint, device = start_run(model_name, hyperparameters, results, resume)
    train_set, test_set = load_datasets(hyperparameters)
    loader = BatchLoader(train_set, hyperparameters["MINIBATCH_SIZE"], device, hyperparameters["SEED"], distributed.rank(), distributed.world_size())
    model = build_model(hyperparameters, train_set.images.shape[1])
    initialise_weights(model, hyperparameters["WEIGHTS_MEAN"], hyperparameters["WEIGHTS_STD"])
    task = AutoencodingTraining(model_name, model.to(device), hyperparameters, train_set, test_set, device, fit_code_distribution)

    open_results_folder(results, hyperparameters_file, hyperparameters, checkpoint)
    action = f"resuming after epoch {checkpoint['epoch']}" if checkpoint else "training"
    print(
        f"{model_name}: {action} on {len(train_set.images)} training and {len(test_set.images)} test {hyperparameters['DATASET_NAME']} images "
        f"on {describe_devices(device)} in {task.precision.name}, seed {hyperparameters['SEED']}, results in {results}"
    )
    train_epochs(task, loader, hyperparameters, results, checkpoint)
    print(f"done: grids, plots and networks are in {results}")


def measure_decoder(model: nn.Module, distribution: CodeDistribution, evaluator, include_inception: bool) -> dict[str, float]:
    """Measure images decoded from codes of `distribution` with a common.metrics Evaluator, which seeds the noise."""

    def generate(count: int) -> torch.Tensor:
        noise = torch.randn(count, model.code_size, device=evaluator.device)
        return model.decode(distribution.codes_from_noise(noise)) * 2 - 1  # the evaluator takes images in [-1, 1]

    with evaluating(model):
        return evaluator.evaluate(generate, include_inception)


def evaluate(model: nn.Module, images: torch.Tensor, device: torch.device, precision: Precision | None = None) -> tuple[dict[str, float], float]:
    """Return the mean of each loss over the uint8 `images`, and the mean squared error per pixel of their reconstructions.

    The reconstruction of an image decodes its deterministic code (the VAE's posterior mean), as the decoded grids show.
    The forward passes run in `precision` (fp32 when None).
    """
    totals = {}
    squared_error = 0.0
    autocast = precision.autocast if precision is not None else nullcontext
    with evaluating(model), autocast():
        for chunk in images.split(EVALUATION_BATCH_SIZE):
            batch = unit_images(chunk, device)
            for name, value in model.losses(batch).items():
                totals[name] = totals.get(name, 0.0) + value.item() * len(batch)
            squared_error += F.mse_loss(model.decode(model.encode(batch)), batch, reduction="sum").item()
    return {name: total / len(images) for name, total in totals.items()}, squared_error / images.numel()


def psnr(mse: float) -> float:
    """Return the peak signal-to-noise ratio in dB of a mean squared error on the [0, 1] scale (peak 1)."""
    return 10 * math.log10(1 / mse) if mse > 0 else math.inf


def fit_distribution(model: nn.Module, images: torch.Tensor, device: torch.device) -> CodeDistribution:
    """Fit a Gaussian to the codes of the uint8 `images`."""
    with evaluating(model):
        codes = torch.cat([model.encode(unit_images(chunk, device)).cpu() for chunk in images.split(EVALUATION_BATCH_SIZE)])
    try:
        return CodeDistribution.fit(codes)
    except ValueError:
        raise UserError("the covariance of the training codes is not positive definite even with jitter; try a lower LEARNING_RATE") from None


def save_epoch_grids(model: nn.Module, test_batch: torch.Tensor, distribution: CodeDistribution, fixed_noise: torch.Tensor, results: Path, epoch: int, columns: int) -> None:
    """Save the fixed test images, their reconstructions and the images decoded from the fixed noise."""
    with evaluating(model):
        reconstructions = model.decode(model.encode(test_batch))
        generated = model.decode(distribution.codes_from_noise(fixed_noise))
    save_unit_grid(test_batch, results / "encoded" / f"epoch_{epoch}.png", columns)
    save_unit_grid(reconstructions, results / "decoded" / f"epoch_{epoch}.png", columns)
    save_unit_grid(generated, results / "saved_generated" / f"epoch_{epoch}.png", columns)


def save_test_interpolations(model: nn.Module, test_batch: torch.Tensor, path: Path, rows: int) -> None:
    """Save one row per pair of test images: the first image, decodes along the straight line between their codes, the second image."""
    if rows < 1:
        return
    firsts, seconds = test_batch[0 : 2 * rows : 2], test_batch[1 : 2 * rows : 2]
    fractions = torch.linspace(0, 1, INTERPOLATION_STEPS, device=test_batch.device).view(1, -1, 1)
    with evaluating(model):
        start, end = model.encode(firsts).unsqueeze(1), model.encode(seconds).unsqueeze(1)
        codes = start + fractions * (end - start)  # rows x steps x code_size
        decoded = model.decode(codes.flatten(0, 1)).unflatten(0, (rows, INTERPOLATION_STEPS))
    grid = torch.cat([firsts.unsqueeze(1), decoded, seconds.unsqueeze(1)], dim=1)
    save_unit_grid(grid.flatten(0, 1), path, INTERPOLATION_STEPS + 2)


def save_single_images(images: torch.Tensor, folder: Path) -> None:
    """Save each image in [0, 1] as its own PNG at the model's image size, grayscale or RGB as trained."""
    for index, image in enumerate(images.cpu(), start=1):
        pixels = image.mul(255).round_().clamp_(0, 255).to(torch.uint8)
        to_pil_image(pixels).save(folder / f"sample_{index:03d}.png")


def load_trained_model(path: Path, model_name: str, build_model: ModelBuilder) -> tuple[nn.Module, CodeDistribution, dict]:
    """Rebuild a trained model and its code distribution from a checkpoint, on the CPU in evaluation mode.

    Return the model, the code distribution and the checkpoint. Raise a UserError when the file
    is missing, unreadable or of another model.
    """
    checkpoint = load_model_checkpoint(path, model_name)
    model = build_model(checkpoint["hyperparameters"], checkpoint["image_channels"])
    try:
        model.encoder.load_state_dict(checkpoint["encoder"])
        model.decoder.load_state_dict(checkpoint["decoder"])
    except RuntimeError as error:
        raise UserError(f"{path} does not fit the {model_name} its hyperparameters describe: {str(error).splitlines()[0]}") from None
    model.eval()
    return model, CodeDistribution(checkpoint["code_mean"], checkpoint["code_covariance"]), checkpoint


def sample_autoencoder(model_name: str, build_model: ModelBuilder, arguments, hyperparameters: dict, results: Path) -> None:
    """Write --generate N images and an --interpolate strip from a checkpoint into results/generated/, on the CPU.

    Codes come from the checkpoint's code distribution: N(0, I) for the VAE, the fitted Gaussian
    for the autoencoder. No dataset is read.
    """
    path = Path(arguments.checkpoint or results / "checkpoint.pt")
    model, distribution, checkpoint = load_trained_model(path, model_name, build_model)
    check_requested_sizes(path, checkpoint["hyperparameters"], arguments.overrides, hyperparameters)
    if arguments.evaluate:
        evaluate_checkpoint(path, checkpoint, hyperparameters, torch.device("cpu"), lambda evaluator: measure_decoder(model, distribution, evaluator, True))
    if arguments.generate is None and not arguments.interpolate:
        return

    seed = arguments.seed if arguments.seed is not None else random.SystemRandom().randrange(2**31)
    generator = torch.Generator().manual_seed(seed)
    folder = prepare_generated_folder(results)

    if arguments.generate is not None:
        count = arguments.generate
        noise = torch.randn(count, model.code_size, generator=generator)
        with evaluating(model):
            images = model.decode(distribution.codes_from_noise(noise))
        save_unit_grid(images, folder / "grid.png", math.ceil(math.sqrt(count)))
        save_single_images(images, folder)
        print(f"wrote grid.png and {count} single images into {folder}")

    if arguments.interpolate:
        start, end = torch.randn(2, model.code_size, generator=generator)
        with evaluating(model):
            images = model.decode(distribution.codes_from_noise(spherical_path(start, end, INTERPOLATION_STEPS)))
        save_unit_grid(images, folder / "interpolation.png", INTERPOLATION_STEPS)
        print(f"wrote interpolation.png into {folder}")
    print(f"seed {seed}: pass --seed {seed} to repeat these samples")
