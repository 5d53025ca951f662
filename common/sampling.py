"""Sampling from a trained model's checkpoint, without the dataset: --generate N and --interpolate.

The checkpoint checks, the interpolation path and the output folder are shared by all five
models. The GAN sampler lives here; the autoencoders' is in common/autoencoding.py.
"""

import argparse
import math
import random
from pathlib import Path

import torch
from torchvision.utils import save_image

from common.checkpoints import describe_load_error, load_checkpoint
from common.errors import ConfigError, UserError
from common.outputs import prepare_results_folder, save_grid, save_labelled_grid
from common.runtime import select_device

INTERPOLATION_STEPS = 10  # images in an --interpolate strip, both end points included
# Hyperparameters that shape the networks: a command-line value that differs from the checkpoint's is an error.
ARCHITECTURE_NAMES = ("IMAGE_SIZE", "IMAGE_CHANNELS", "LATENT_INPUT", "CODE_SIZE", "COMPLEXITY", "PACKING", "NUMBER_LABELS")


def sample_gan(model, arguments: argparse.Namespace, hyperparameters: dict, results: Path) -> None:
    """Load the generator of `model` from its checkpoint and write the requested samples into results/generated/."""
    path = Path(arguments.checkpoint) if arguments.checkpoint else results / "checkpoint.pt"
    checkpoint = load_model_checkpoint(path, model.name)
    check_requested_sizes(path, checkpoint["hyperparameters"], arguments.overrides, hyperparameters)

    device = select_device(hyperparameters["DEVICE"])
    generator, _ = model.build_networks(checkpoint["hyperparameters"], checkpoint["image_channels"])
    try:
        generator.load_state_dict(checkpoint["generator"])
    except RuntimeError as error:
        raise UserError(f"{path} does not fit the {model.name} generator its hyperparameters describe: {str(error).splitlines()[0]}") from None
    generator.to(device).eval()

    def generate(latent: torch.Tensor, batch_labels: torch.Tensor | None) -> torch.Tensor:
        latent = latent.to(device)
        with torch.no_grad():
            images = generator(latent) if batch_labels is None else generator(latent, batch_labels.to(device))
        return images.cpu()

    latent_size = checkpoint["hyperparameters"]["LATENT_INPUT"]
    if arguments.evaluate:
        from common.adversarial import measure_generator

        evaluate_checkpoint(path, checkpoint, hyperparameters, device, lambda evaluator: measure_generator(generate, latent_size, model.conditional, evaluator, True))
    if arguments.generate is None and not arguments.interpolate:
        return

    seed = arguments.seed if arguments.seed is not None else random.SystemRandom().randrange(2**31)
    latent_random = torch.Generator().manual_seed(seed)  # drawn on the CPU, so a seed gives the same images on any device
    class_names = checkpoint["class_names"]
    labels = select_labels(arguments, class_names) if model.conditional else None
    output = prepare_generated_folder(results)

    if arguments.generate is not None:
        count = arguments.generate
        latent = torch.randn(count, latent_size, generator=latent_random)
        write_samples(generate, latent, labels, class_names, output)
        files = count * (1 if labels is None else len(labels))
        print(f"wrote grid.png and {files} single images into {output} (seed {seed})")
    if arguments.interpolate:
        start, end = torch.randn(2, latent_size, generator=latent_random)
        path_points = spherical_path(start, end, INTERPOLATION_STEPS)
        write_interpolation(generate, path_points, labels, class_names, output / "interpolation.png")
        print(f"wrote {output / 'interpolation.png'} (seed {seed})")


def evaluate_checkpoint(path: Path, checkpoint: dict, hyperparameters: dict, device: torch.device, measure) -> None:
    """Print the quality metrics of a checkpoint's model, measured by `measure(evaluator)` against its dataset.

    The dataset and training images are the checkpoint's; METRICS_SAMPLES comes from the command
    line or hyperparameters.py, so a quicker, rougher measurement is one override away.
    """
    from common.data import load_dataset, load_training_set
    from common.metrics import Evaluator

    samples = hyperparameters["METRICS_SAMPLES"]
    if samples == 0:
        raise ConfigError("--evaluate needs METRICS_SAMPLES above 0, such as METRICS_SAMPLES=10000")
    trained = {**checkpoint["hyperparameters"], "METRICS_SAMPLES": samples}
    evaluator = Evaluator(trained, device, load_dataset(trained, train=False), load_training_set(trained))
    values = measure(evaluator)
    print(f"{path}, epoch {checkpoint.get('epoch', '?')}: {evaluator.describe(values)}")


def load_model_checkpoint(path: Path, model_name: str) -> dict:
    """Load a checkpoint and check that `model_name` wrote it."""
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}: train the model first, or pass --checkpoint PATH")
    try:
        checkpoint = load_checkpoint(path)
    except Exception as error:  # noqa: BLE001 - torch.load raises many types for a damaged or foreign file
        raise UserError(f"cannot load checkpoint {path}: {describe_load_error(error)}; pass another one with --checkpoint") from None
    written_by = checkpoint.get("model") if isinstance(checkpoint, dict) else None
    if written_by != model_name:
        source = f"{written_by}.py" if written_by else "another program"
        raise UserError(f"{path} was written by {source}, not {model_name}.py; pass a {model_name} checkpoint with --checkpoint")
    return checkpoint


def check_requested_sizes(path: Path, trained: dict, overrides: list[str], hyperparameters: dict) -> None:
    """Stop when a network size given on the command line differs from the size the checkpoint was trained with."""
    for argument in overrides:
        name = argument.partition("=")[0].strip()
        if name in ARCHITECTURE_NAMES and name in trained and hyperparameters[name] != trained[name]:
            raise ConfigError(
                f"{path} was trained with {name}={trained[name]!r}, not the requested {name}={hyperparameters[name]!r}; "
                f"drop {name} from the command line or pass a matching checkpoint"
            )


def select_labels(arguments: argparse.Namespace, class_names: list[str]) -> torch.Tensor:
    """Return the classes to generate: the one --label names (an index or a class name), else every class."""
    if arguments.label is None:
        return torch.arange(len(class_names))
    text = arguments.label.strip()
    if text.isdigit() and int(text) < len(class_names):
        return torch.tensor([int(text)])
    for index, name in enumerate(class_names):
        short_name = name.split(" - ")[-1]  # torchvision's MNIST classes read "0 - zero"
        if text.lower() in (name.lower(), short_name.lower()):
            return torch.tensor([index])
    raise ConfigError(f"invalid --label {text!r}: expected a class index from 0 to {len(class_names) - 1} or one of: {', '.join(class_names)}")


def write_samples(generate, latent: torch.Tensor, labels: torch.Tensor | None, class_names: list[str], output: Path) -> None:
    """Write grid.png and one PNG per sample. A conditional model gets one grid row per class, sharing the latent vectors."""
    count = len(latent)
    if labels is None:
        images = generate(latent, None)
        save_grid(images, output / "grid.png", columns=math.ceil(math.sqrt(count)))
        for index, image in enumerate(images, start=1):
            save_image(image.add(1).div(2).clamp(0, 1), output / f"sample_{index:03d}.png")
        return

    images = generate(latent.repeat(len(labels), 1), labels.repeat_interleave(count))  # row r: class labels[r]
    save_labelled_grid(images, output / "grid.png", count, [class_names[label] for label in labels.tolist()])
    for position, image in enumerate(images):
        label = labels[position // count].item()
        save_image(image.add(1).div(2).clamp(0, 1), output / f"class_{label}_{position % count + 1:03d}.png")


def write_interpolation(generate, path_points: torch.Tensor, labels: torch.Tensor | None, class_names: list[str], destination: Path) -> None:
    """Write a strip of images along `path_points`; a conditional model gets one strip per class."""
    steps = len(path_points)
    if labels is None:
        save_grid(generate(path_points, None), destination, columns=steps)
        return
    images = generate(path_points.repeat(len(labels), 1), labels.repeat_interleave(steps))
    save_labelled_grid(images, destination, steps, [class_names[label] for label in labels.tolist()])


def spherical_path(start: torch.Tensor, end: torch.Tensor, steps: int) -> torch.Tensor:
    """Return `steps` points from `start` to `end` along a great circle, scaling the norm linearly.

    Spherical interpolation (White 2016, "Sampling Generative Networks"): high-dimensional
    standard normal samples lie near a sphere, so a straight line between two of them passes
    through codes of unusually small norm. This path stays near the sphere.
    """
    fractions = torch.linspace(0, 1, steps).unsqueeze(1)
    start_norm, end_norm = start.norm(), end.norm()
    cosine = torch.dot(start / start_norm, end / end_norm).clamp(-1, 1)
    angle = torch.arccos(cosine)
    if angle < 1e-4:  # nearly parallel: the straight line is the same path
        return start + fractions * (end - start)
    directions = (torch.sin((1 - fractions) * angle) * start / start_norm + torch.sin(fractions * angle) * end / end_norm) / torch.sin(angle)
    return directions * (start_norm + fractions * (end_norm - start_norm))


def prepare_generated_folder(results: Path) -> Path:
    """Create an empty results/generated/ folder, renaming the samples of an earlier call aside as results folders are."""
    folder = results / "generated"
    moved_to = prepare_results_folder(folder)
    if moved_to:
        print(f"moved the earlier samples to {moved_to}")
    return folder
