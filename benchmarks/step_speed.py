"""Measure one DCGAN training iteration in each combination of precision, memory format and torch.compile.

Usage, from the repository root, on a machine with an NVIDIA GPU (about 3 minutes):

    .venv/bin/python benchmarks/step_speed.py
    .venv/bin/python benchmarks/step_speed.py --device cpu --sizes 32 --no-compile   # the same on the CPU

Every variant is the project's AdversarialTrainer with DCGAN's default hyperparameters, fed by
the project's BatchLoader with random images, so no dataset is needed. The variants live in one
process and run alternately in timed blocks, so that a change in load affects all alike. A
compiled variant's first iterations are timed apart: the compile time, and the iterations it
needs to pay itself back against the fastest variant without compile, are printed beside an
MNIST epoch's 937 iterations.
"""

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from common.adversarial import AdversarialTrainer, GANModel  # noqa: E402
from common.config import load_hyperparameters  # noqa: E402
from common.data import BatchLoader, ImageSet  # noqa: E402
from common.networks import build_networks  # noqa: E402
from common.precision import Precision  # noqa: E402

SHAPES = {32: 1, 64: 3}  # image size -> channels: MNIST-like digits at 32 px, sprite-like colour images at 64 px
MNIST_EPOCH_ITERATIONS = 60_000 // 64
WARMUP_ITERATIONS = 3
RANDOM_IMAGES = 64 * 20


@dataclass
class Variant:
    name: str
    precision: str  # "fp32" or "bf16"
    channels_last: bool
    compiled: bool
    trainer: AdversarialTrainer | None = None
    batches: object = None
    compile_seconds: float = 0.0
    rates: list[float] = field(default_factory=list)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="step_speed.py", description="Time DCGAN training iterations in fp32 and bf16, with and without channels-last and torch.compile.")
    parser.add_argument("--device", default="cuda", help='device to measure: "cuda" (default), "cuda:N" or "cpu"')
    parser.add_argument("--sizes", nargs="+", type=int, default=[32, 64], metavar="PX", help="32 (1 channel) and/or 64 (3 channels) (default: both)")
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks per variant (default: 5)")
    parser.add_argument("--seconds", type=float, default=1.0, help="target length of one timed block of the slowest variant, in seconds (default: 1)")
    parser.add_argument("--steps", type=int, help="iterations per timed block, instead of sizing blocks by --seconds")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile variants")
    parser.add_argument("--threads", type=int, help="torch's CPU threads (default: torch's default, one per core)")
    arguments = parser.parse_args(argv)
    for size in arguments.sizes:
        if size not in SHAPES:
            parser.error(f"invalid size {size}: expected 32 and/or 64")
    if arguments.repeats < 1 or (arguments.steps is not None and arguments.steps < 1) or arguments.seconds <= 0:
        parser.error("--repeats and --steps must be at least 1, and --seconds positive")
    if arguments.threads is not None and arguments.threads < 1:
        parser.error(f"invalid thread count {arguments.threads}: expected at least 1")
    return arguments


def select_device(name: str) -> torch.device:
    """Return the device to measure, or stop with one line when it is not there."""
    try:
        device = torch.device(name)
    except RuntimeError:
        sys.exit(f'step_speed.py: error: invalid device {name!r}: expected "cuda", "cuda:N" or "cpu"')
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("step_speed.py: error: CUDA is not available on this machine; run it on a machine with an NVIDIA GPU, or pass --device cpu")
    if device.type not in ("cuda", "cpu"):
        sys.exit(f'step_speed.py: error: invalid device {name!r}: expected "cuda", "cuda:N" or "cpu"')
    return device


def variants(device: torch.device, include_compile: bool) -> list[Variant]:
    """Return fp32 and bf16, each in both memory formats, and compiled bf16 where bf16 autocast is available, plus compiled fp32."""
    found = [Variant("fp32", "fp32", False, False), Variant("fp32 channels-last", "fp32", True, False)]
    bf16 = device.type == "cpu" or torch.cuda.is_bf16_supported(including_emulation=False)
    if bf16:
        found += [Variant("bf16", "bf16", False, False), Variant("bf16 channels-last", "bf16", True, False)]
    if include_compile:
        found.append(Variant("fp32 channels-last compiled", "fp32", True, True))
        if bf16:
            found.append(Variant("bf16 channels-last compiled", "bf16", True, True))
    return found


def build(variant: Variant, size: int, device: torch.device) -> None:
    """Give `variant` a DCGAN trainer on random images, with compiled networks for a compiled variant."""
    channels = SHAPES[size]
    hyperparameters, _ = load_hyperparameters(REPO_ROOT / "DCGAN" / "hyperparameters.py", [f"IMAGE_SIZE={size}", f"IMAGE_CHANNELS={channels}"])
    torch.manual_seed(0)
    generator, discriminator = build_networks(hyperparameters, channels)
    model = GANModel("DCGAN", build_networks, score_loss)
    precision = Precision(variant.precision, device.type, variant.channels_last)
    variant.trainer = AdversarialTrainer(model, generator, discriminator, hyperparameters, device, precision)
    if variant.compiled:
        variant.trainer.generator = torch.compile(variant.trainer.generator)
        variant.trainer.discriminator = torch.compile(variant.trainer.discriminator)
    images = torch.randint(0, 256, (RANDOM_IMAGES, channels, size, size), dtype=torch.uint8)
    loader = BatchLoader(ImageSet(images, torch.zeros(RANDOM_IMAGES, dtype=torch.long), ["random"]), hyperparameters["MINIBATCH_SIZE"], device, seed=0)
    variant.batches = endless(loader)


def score_loss(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.binary_cross_entropy_with_logits(scores, targets)


def endless(loader):
    while True:
        yield from loader


def run_block(variant: Variant, iterations: int, device: torch.device) -> float:
    """Train `iterations` iterations and return their seconds, waiting for the GPU before and after."""
    synchronize(device)
    started = time.perf_counter()
    for _ in range(iterations):
        images, labels = next(variant.batches)
        variant.trainer.train_iteration(images, labels)
    synchronize(device)
    return time.perf_counter() - started


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_size(size: int, arguments: argparse.Namespace, device: torch.device) -> list[Variant]:
    measured = variants(device, not arguments.no_compile)
    for variant in measured:
        build(variant, size, device)
        # A compiled variant compiles in its first iterations: its forward and backward graphs, for each network state.
        variant.compile_seconds = run_block(variant, WARMUP_ITERATIONS, device)
    steady = {variant.name: run_block(variant, 2, device) / 2 for variant in measured}
    iterations = arguments.steps or max(2, round(arguments.seconds / max(steady.values())))
    for variant in measured:
        # The warm-up time beyond WARMUP_ITERATIONS steady iterations is the cost of compiling.
        variant.compile_seconds = max(0.0, variant.compile_seconds - WARMUP_ITERATIONS * steady[variant.name]) if variant.compiled else 0.0

    batch_size = 64
    for repeat in range(arguments.repeats):
        for variant in measured if repeat % 2 == 0 else measured[::-1]:
            variant.rates.append(iterations * batch_size / run_block(variant, iterations, device))
    return measured


def print_table(size: int, measured: list[Variant]) -> None:
    base = measured[0].rates
    best_eager = max(statistics.median(variant.rates) for variant in measured if not variant.compiled)
    print(f"\nDCGAN {size} px, {SHAPES[size]} channel(s)")
    print(f"{'variant':30s} {'img/s':>8s} {'vs fp32 (min-max)':>20s} {'compile s':>10s} {'pays back after':>18s}")
    for variant in measured:
        ratios = [rate / reference for rate, reference in zip(variant.rates, base)]
        median = statistics.median(variant.rates)
        summary = f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
        payback = ""
        if variant.compiled:
            gain = 64 / best_eager - 64 / median  # seconds saved per iteration against the fastest eager variant
            payback = f"{variant.compile_seconds / gain:.0f} iterations" if gain > 0 else "never"
        compile_time = f"{variant.compile_seconds:.1f}" if variant.compiled else ""
        print(f"{variant.name:30s} {median:8.0f} {summary:>20s} {compile_time:>10s} {payback:>18s}")
    print(f"(an MNIST epoch is {MNIST_EPOCH_ITERATIONS} iterations)")


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    device = select_device(arguments.device)
    if arguments.threads is not None:
        torch.set_num_threads(arguments.threads)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"step_speed.py on {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for size in arguments.sizes:
        print_table(size, measure_size(size, arguments, device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
