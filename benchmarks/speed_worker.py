"""One side of benchmarks/train_speed.py in a process of its own: the project's training loop or a tutorial-style one.

Each side runs in its own process, so that its peak resident memory is its own, and the parent
alternates the sides, so that a change in the machine's load affects both alike. The parent
starts this script with one JSON argument (see Side), then sends one command per line on stdin
and reads one JSON line per command on stdout:

    run N    train N more iterations; reply {"seconds": S}
    flops    count the floating-point operations of one more iteration; reply {"flops": F}
    quit     reply {"peak_rss_mb": M} and exit

Before the first command, the side sends {"ready": true, "precision": P, "import_rss_mb": R} once it
is built, where R is its resident memory after its imports (None where there is no /proc).
"""

import importlib.util
import json
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from torchvision import datasets, transforms  # noqa: E402

from common.config import load_hyperparameters  # noqa: E402

GAN_MODELS = ("DCGAN", "LSGAN", "CGAN")
AUTOENCODING_MODELS = ("Autoencoder", "VAE")
# The data of each channel count: MNIST digits (1 channel) and the Pokemon sprites (3 channels).
DATASETS = {1: "MNIST", 3: "POKEMON"}
SEED = 0


@dataclass
class Side:
    kind: str  # "project" or "reference"
    model: str  # a model folder: DCGAN, LSGAN, CGAN, Autoencoder or VAE
    size: int  # image side in pixels, 32 or 64
    channels: int  # 1 (MNIST) or 3 (Pokemon sprites)
    data_root: str  # a data folder laid out as data/: MNIST/raw/, POKEMON/ and cache/
    precision: str = "auto"  # the project's PRECISION; the reference always runs fp32
    loader_workers: int = 0  # the reference's DataLoader num_workers
    threads: int | None = None  # torch's intra-op threads; None keeps torch's default, one per core


def load_script(model: str):
    """Import a model's script as a module, with its folder first on sys.path for its own `models` import."""
    folder = REPO_ROOT / model
    sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(f"script_{model}", folder / f"{model}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def model_hyperparameters(side: Side) -> dict:
    """Return the model's default hyperparameters for this side's data, size and precision, on the CPU."""
    overrides = [
        f"DATASET_NAME={DATASETS[side.channels]}",
        f"IMAGE_SIZE={side.size}",
        f"IMAGE_CHANNELS={side.channels}",
        f"PRECISION={side.precision}",
        "DEVICE=cpu",
        f"SEED={SEED}",
    ]
    hyperparameters, _ = load_hyperparameters(REPO_ROOT / side.model / "hyperparameters.py", overrides)
    return hyperparameters


def endless(batches) -> Iterator:
    """Yield the batches of an iterable again and again, one epoch after the other."""
    while True:
        yield from batches


def build_project_iteration(side: Side) -> tuple[Callable[[], None], str]:
    """Return one iteration of the project's own loop (BatchLoader and the model's train_iteration) and the precision it runs in."""
    from common.adversarial import AdversarialTrainer
    from common.autoencoding import AutoencodingTraining
    from common.data import BatchLoader, load_dataset
    from common.networks import initialise_weights

    hyperparameters = model_hyperparameters(side)
    device = torch.device("cpu")
    root = Path(side.data_root)
    train_set = load_dataset(hyperparameters, train=True, root=root)
    loader = BatchLoader(train_set, hyperparameters["MINIBATCH_SIZE"], device, SEED)
    script = load_script(side.model)
    if side.model in GAN_MODELS:
        model = script.load_model()
        generator, discriminator = model.build_networks(hyperparameters, side.channels)
        task = AdversarialTrainer(model, generator, discriminator, hyperparameters, device)
    else:
        test_set = load_dataset(hyperparameters, train=False, root=root)
        network = script.build_model(hyperparameters, side.channels)
        initialise_weights(network, hyperparameters["WEIGHTS_MEAN"], hyperparameters["WEIGHTS_STD"])
        fit_code_distribution = side.model == "Autoencoder"
        task = AutoencodingTraining(side.model, network.to(device), hyperparameters, train_set, test_set, device, fit_code_distribution)

    batches = endless(loader)
    losses = []  # kept, as the epoch loop keeps them for its history

    def iteration() -> None:
        images, labels = next(batches)
        losses.append(task.train_iteration(images, labels))

    return iteration, task.precision.name


def tutorial_dataset(side: Side, normalise: bool):
    """Return the images as tutorials load them: a torchvision dataset that decodes and transforms each image when it is read.

    MNIST is torchvision's MNIST class. The sprites are an ImageFolder of their PNG files, read
    through a class folder that links to the sprite folder, as ImageFolder needs one.
    """
    steps = [transforms.Resize(side.size), transforms.CenterCrop(side.size), transforms.ToTensor()]
    if normalise:  # the GANs train on [-1, 1]; the autoencoders on ToTensor's [0, 1]
        steps.append(transforms.Normalize([0.5] * side.channels, [0.5] * side.channels))
    transform = transforms.Compose(steps)
    root = Path(side.data_root)
    if side.channels == 1:
        return datasets.MNIST(root=str(root), train=True, transform=transform)
    return datasets.ImageFolder(str(root / "reference_sprites"), transform=transform)


def build_reference_iteration(side: Side) -> tuple[Callable[[], None], str]:
    """Return one iteration of a tutorial-style loop (a DataLoader over per-image PIL transforms, fp32, default memory format) and "fp32".

    The networks, batch size, Adam settings and updates per iteration are those of the project's
    loop. What differs is how tutorials write the loop: the batches come from a DataLoader, and
    the generator update also computes the discriminator's weight gradients, which the project
    skips.
    """
    hyperparameters = model_hyperparameters(side)
    script = load_script(side.model)
    gan = side.model in GAN_MODELS
    loader = DataLoader(tutorial_dataset(side, normalise=gan), batch_size=hyperparameters["MINIBATCH_SIZE"], shuffle=True, num_workers=side.loader_workers)
    batches = endless(loader)
    losses = []

    if not gan:
        from common.networks import initialise_weights

        network = script.build_model(hyperparameters, side.channels)
        initialise_weights(network, hyperparameters["WEIGHTS_MEAN"], hyperparameters["WEIGHTS_STD"])
        optimizer = torch.optim.Adam(network.parameters(), lr=hyperparameters["LEARNING_RATE"])

        def autoencoder_iteration() -> None:
            images, _ = next(batches)
            loss = network.losses(images)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())

        return autoencoder_iteration, "fp32"

    model = script.load_model()
    generator, discriminator = model.build_networks(hyperparameters, side.channels)
    adam = dict(lr=hyperparameters["LEARNING_RATE"], betas=(hyperparameters["BETA1"], hyperparameters["BETA2"]))
    generator_optimizer = torch.optim.Adam(generator.parameters(), **adam)
    discriminator_optimizer = torch.optim.Adam(discriminator.parameters(), **adam)
    latent_size = hyperparameters["LATENT_INPUT"]

    def fake_inputs(count: int) -> tuple:
        latent = torch.randn(count, latent_size)
        return (latent, torch.randint(0, hyperparameters["NUMBER_LABELS"], (count,))) if model.conditional else (latent,)

    def gan_iteration() -> None:
        images, labels = next(batches)
        count = len(images)
        real_inputs = (images, labels) if model.conditional else (images,)
        ones, zeros = torch.ones(count), torch.zeros(count)
        for _ in range(hyperparameters["NB_DISCRIMINATOR_STEP"]):
            discriminator_optimizer.zero_grad()
            inputs = fake_inputs(count)
            with torch.no_grad():
                fake_images = generator(*inputs)
            fake_labels = inputs[1:]
            loss = model.score_loss(discriminator(*real_inputs), ones) + model.score_loss(discriminator(fake_images, *fake_labels), zeros)
            loss.backward()
            discriminator_optimizer.step()
        for _ in range(hyperparameters["NB_GENERATOR_STEP"]):
            generator_optimizer.zero_grad()
            inputs = fake_inputs(count)
            loss = model.score_loss(discriminator(generator(*inputs), *inputs[1:]), ones)
            loss.backward()
            generator_optimizer.step()
        losses.append(loss.item())

    return gan_iteration, "fp32"


def memory_mb(field: str) -> float | None:
    """Return a memory figure of this process from /proc/self/status in MB, such as VmRSS, or None where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024  # in kB
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """Return the peak resident memory of this process in MB, without that of DataLoader worker processes.

    On Linux it is VmHWM, the high-water mark of this program's memory. getrusage's ru_maxrss
    would not do there, because Linux carries it over from the parent process through exec.
    """
    peak = memory_mb("VmHWM")
    if peak is not None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, kilobytes elsewhere


def reply(message: dict) -> None:
    print(json.dumps(message), flush=True)


def serve(side: Side) -> None:
    """Build the side, then reply to the parent's commands until it sends quit."""
    import_rss_mb = memory_mb("VmRSS")  # torch, torchvision and the project's modules, before any data or network
    if side.threads is not None:
        torch.set_num_threads(side.threads)
    torch.manual_seed(SEED)
    build = build_project_iteration if side.kind == "project" else build_reference_iteration
    iteration, precision = build(side)
    reply({"ready": True, "precision": precision, "import_rss_mb": import_rss_mb})

    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "run":
            started = time.perf_counter()
            for _ in range(int(argument)):
                iteration()
            reply({"seconds": time.perf_counter() - started})
        elif command == "flops":
            with FlopCounterMode(display=False) as counter:
                iteration()
            reply({"flops": counter.get_total_flops()})
        elif command == "quit":
            break
        else:
            raise ValueError(f"unknown command {line.strip()!r}; expected run N, flops or quit")
    reply({"peak_rss_mb": peak_rss_mb()})


if __name__ == "__main__":
    serve(Side(**json.loads(sys.argv[1])))
