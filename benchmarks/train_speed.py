"""Measure the training speed of the project's loop against a tutorial-style loop, side by side.

Usage, from the repository root:

    .venv/bin/python benchmarks/train_speed.py            # every model at 32 and 64 px, 1 and 3 channels: about 10 minutes on 2 cores
    .venv/bin/python benchmarks/train_speed.py --quick    # fewer repeats, each model at 32 px grey and 64 px colour
    .venv/bin/python benchmarks/train_speed.py --models DCGAN --sizes 32 --channels 1

For each model, image size and channel count (1: MNIST digits, 3: Pokemon sprites), with the
model's default hyperparameters, it measures:

- training images per second of the project's loop (BatchLoader and the model's
  train_iteration, in the resolved PRECISION) and of a reference loop written as tutorials
  write it (a torchvision dataset with per-image PIL transforms, a DataLoader, fp32, the
  default memory format) with the same networks, batch size, Adam settings and steps. The two
  run in separate processes, alternately, for several repeats, and the ratio of each repeat is
  reported as its median and range;
- the floating-point operations of one training image (torch.utils.flop_counter) and the rate
  the project's loop achieves, as a fraction of the fp32 or bf16 matrix-multiply rate measured
  in the same run;
- the peak resident memory of each side's process.

A GAN consumes one batch of real images per iteration and updates its networks
NB_DISCRIMINATOR_STEP + NB_GENERATOR_STEP times on it, so its images per second count real
training images. The table is printed and written into BENCHMARKS.md, between marker lines, so
the notes around it stay.
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.speed_worker import AUTOENCODING_MODELS, DATASETS, GAN_MODELS, Side  # noqa: E402

MODELS = GAN_MODELS + AUTOENCODING_MODELS
BEGIN_MARKER = "<!-- train_speed.py table: begin -->"
END_MARKER = "<!-- train_speed.py table: end -->"
WARMUP_ITERATIONS = 3  # untimed iterations per side before the first repeat: allocator, oneDNN kernel choice, DataLoader start
WORKER_TIMEOUT_SECONDS = 600  # maximum time a side may take to reply to one command


class BenchmarkError(Exception):
    """A failure to report in one line: bad options, a missing dataset, a side that crashed."""


@dataclass
class Configuration:
    model: str
    size: int
    channels: int


@dataclass
class Result:
    configuration: Configuration
    precision: str
    iterations_per_repeat: int
    batch_size: int
    rates: dict[str, list[float]] = field(default_factory=dict)  # images per second of each repeat, by side name
    flops_per_image: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    import_rss_mb: float | None = None  # the project side's resident memory after its imports


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="train_speed.py",
        description="Measure training images per second of the project's loop against a tutorial-style loop, interleaved.",
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), metavar="MODEL", help=f"models to measure (default: all of {', '.join(MODELS)})")
    parser.add_argument("--sizes", nargs="+", type=int, default=[32, 64], metavar="PX", help="image sizes in pixels, 32 and/or 64 (default: both)")
    parser.add_argument("--channels", nargs="+", type=int, default=[1, 3], metavar="C", help="1 (MNIST) and/or 3 (Pokemon sprites) (default: both)")
    parser.add_argument("--precision", default="auto", help="the project side's PRECISION: auto, fp32 or bf16 (default: auto)")
    parser.add_argument("--repeats", type=int, help="timed blocks per side, alternating between the sides (default: 3, or 2 with --quick)")
    parser.add_argument("--seconds", type=float, help="target length of one timed block of the slowest side, in seconds (default: 2, or 1 with --quick)")
    parser.add_argument("--steps", type=int, help="iterations per timed block, instead of sizing blocks by --seconds")
    parser.add_argument(
        "--reference-workers", nargs="+", type=int, metavar="N",
        help="DataLoader num_workers of the reference loops to run (default: 0 and 2, or 0 with --quick)",
    )
    parser.add_argument(
        "--threads", type=int,
        help="torch threads of each side (default: torch's default, one per core); 1 makes ratios steadier on a machine shared with other jobs",
    )
    parser.add_argument("--quick", action="store_true", help="each model at 32 px with 1 channel and at 64 px with 3 channels, shorter blocks and fewer repeats")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "BENCHMARKS.md", help="the Markdown file whose table to write (default: BENCHMARKS.md)")
    arguments = parser.parse_args(argv)

    if arguments.quick:
        arguments.repeats = arguments.repeats or 2
        arguments.seconds = arguments.seconds or 1.0
        arguments.reference_workers = arguments.reference_workers or [0]
    arguments.repeats = arguments.repeats or 3
    arguments.seconds = arguments.seconds or 2.0
    arguments.reference_workers = arguments.reference_workers or [0, 2]
    check_arguments(parser, arguments)
    return arguments


def check_arguments(parser: argparse.ArgumentParser, arguments: argparse.Namespace) -> None:
    """Stop with one usage line on the first option value that cannot be measured."""
    for model in arguments.models:
        if model not in MODELS:
            parser.error(f"invalid model {model!r}: expected some of {', '.join(MODELS)}")
    for size in arguments.sizes:
        if size not in (32, 64):
            parser.error(f"invalid size {size}: expected 32 and/or 64")
    for channels in arguments.channels:
        if channels not in DATASETS:
            parser.error(f"invalid channel count {channels}: expected 1 (MNIST) and/or 3 (Pokemon sprites)")
    if arguments.precision not in ("auto", "fp32", "bf16"):
        parser.error(f"invalid precision {arguments.precision!r}: expected auto, fp32 or bf16")
    if arguments.repeats < 1:
        parser.error(f"invalid repeat count {arguments.repeats}: expected at least 1")
    if arguments.steps is not None and arguments.steps < 1:
        parser.error(f"invalid step count {arguments.steps}: expected at least 1")
    if arguments.seconds <= 0:
        parser.error(f"invalid block length {arguments.seconds}: expected a positive number of seconds")
    for workers in arguments.reference_workers:
        if workers < 0:
            parser.error(f"invalid DataLoader worker count {workers}: expected 0 or more")
    if arguments.threads is not None and arguments.threads < 1:
        parser.error(f"invalid thread count {arguments.threads}: expected at least 1")


def configurations(arguments: argparse.Namespace) -> list[Configuration]:
    if arguments.quick:
        pairs = [(32, 1), (64, 3)]
        pairs = [(size, channels) for size, channels in pairs if size in arguments.sizes and channels in arguments.channels]
    else:
        pairs = [(size, channels) for size in arguments.sizes for channels in arguments.channels]
    return [Configuration(model, size, channels) for model in arguments.models for size, channels in pairs]


def prepare_data_root(folder: Path, configurations: list[Configuration]) -> Path:
    """Link the real MNIST and sprite folders into `folder` and prepare the project's caches of them there, not in data/.

    The datasets are fetched into data/ first when missing, as the model scripts would. With the
    caches ready, no side decodes or resizes images while its memory is measured.
    """
    from common.data import load_images
    from common.errors import UserError
    from data.fetch import DATA_ROOT, FetchError, ensure_dataset
    from data.pokemon import ensure_pokemon

    try:
        ensure_dataset("MNIST")
        sprites = ensure_pokemon()
    except (FetchError, UserError) as error:
        raise BenchmarkError(str(error)) from None
    (folder / "MNIST").symlink_to(DATA_ROOT / "MNIST", target_is_directory=True)
    (folder / "POKEMON").symlink_to(sprites, target_is_directory=True)
    # ImageFolder, the reference side's reader, wants one subfolder per class.
    (folder / "reference_sprites").mkdir()
    (folder / "reference_sprites" / "sprites").symlink_to(sprites, target_is_directory=True)

    for size, channels in sorted({(configuration.size, configuration.channels) for configuration in configurations}):
        for train in (True, False):  # the autoencoders' grids need the test split too
            load_images(DATASETS[channels], size, channels, train, folder)
    return folder


class Worker:
    """A side of the comparison running in its own process (benchmarks/speed_worker.py)."""

    def __init__(self, name: str, side: Side):
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("speed_worker.py")), json.dumps(asdict(side))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
        )

    def receive(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(timeout=WORKER_TIMEOUT_SECONDS)
            raise BenchmarkError(f"the {self.name} side exited with status {self.process.returncode} (its error is printed above)")
        return json.loads(line)

    def ask(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.receive()

    def close(self) -> dict:
        result = self.ask("quit")
        self.process.wait(timeout=WORKER_TIMEOUT_SECONDS)
        return result

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def measure(configuration: Configuration, arguments: argparse.Namespace, data_root: Path) -> Result:
    """Run the project side and each reference side alternately and collect their rates, FLOPs and memory."""
    common = dict(model=configuration.model, size=configuration.size, channels=configuration.channels, data_root=str(data_root), threads=arguments.threads)
    workers = [Worker("project", Side("project", precision=arguments.precision, **common))]
    for count in arguments.reference_workers:
        workers.append(Worker(f"reference workers={count}", Side("reference", loader_workers=count, **common)))
    try:
        # Every side builds its data and networks at the same time; the timed blocks come later, one side at a time.
        project_ready = [worker.receive() for worker in workers][0]
        for worker in workers:
            worker.ask(f"run {WARMUP_ITERATIONS}")
        iterations = arguments.steps or block_iterations(workers, arguments.seconds)
        batch_size = default_batch_size(configuration.model)
        result = Result(configuration, project_ready["precision"], iterations, batch_size, import_rss_mb=project_ready["import_rss_mb"])

        for repeat in range(arguments.repeats):
            order = workers if repeat % 2 == 0 else workers[::-1]  # ABBA order cancels a steady drift in load
            for worker in order:
                seconds = worker.ask(f"run {iterations}")["seconds"]
                result.rates.setdefault(worker.name, []).append(iterations * batch_size / seconds)
        for worker in workers[:2]:
            result.flops_per_image[worker.name] = worker.ask("flops")["flops"] / batch_size
        for worker in workers:
            result.peak_rss_mb[worker.name] = worker.close()["peak_rss_mb"]
        return result
    finally:
        for worker in workers:
            worker.kill()


def block_iterations(workers: list[Worker], seconds: float) -> int:
    """Return the iterations per timed block that make the slowest side's block last about `seconds`."""
    slowest = max(worker.ask("run 2")["seconds"] / 2 for worker in workers)
    return max(2, round(seconds / slowest))


def default_batch_size(model: str) -> int:
    from common.config import read_hyperparameters

    return read_hyperparameters(REPO_ROOT / model / "hyperparameters.py")["MINIBATCH_SIZE"].value


def matmul_rates(threads: int | None, seconds: float = 1.0, size: int = 2048) -> dict[str, float]:
    """Return the best rate of size x size matrix products on `threads` threads, in FLOP/s, in fp32 and bf16, each timed for about `seconds`."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    rates = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        left, right = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        torch.mm(left, right)  # warm-up
        best = 0.0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            torch.mm(left, right)
            best = max(best, 2 * size**3 / (time.perf_counter() - started))
        rates[name] = best
    return rates


def ratio_summary(project: list[float], reference: list[float]) -> tuple[float, float, float]:
    """Return the median, minimum and maximum of the per-repeat ratios project / reference."""
    ratios = [a / b for a, b in zip(project, reference)]
    return statistics.median(ratios), min(ratios), max(ratios)


def table_rows(results: list[Result], peaks: dict[str, float], reference_workers: list[int]) -> list[list[str]]:
    rows = []
    for result in results:
        configuration = result.configuration
        project = result.rates["project"]
        row = [configuration.model, str(configuration.size), str(configuration.channels), result.precision, f"{statistics.median(project):.0f}"]
        for count in reference_workers:
            reference = result.rates[f"reference workers={count}"]
            median, low, high = ratio_summary(project, reference)
            row += [f"{statistics.median(reference):.0f}", f"{median:.2f} ({low:.2f}-{high:.2f})"]
        flops = result.flops_per_image["project"]
        reference_flops = result.flops_per_image[f"reference workers={reference_workers[0]}"]
        achieved = flops * statistics.median(project)
        peak = peaks[result.precision]
        row += [f"{flops / 1e9:.3f}", f"{reference_flops / 1e9:.3f}", f"{achieved / 1e9:.1f}", f"{100 * achieved / peak:.0f}%"]
        row += [f"{result.peak_rss_mb['project']:.0f}", f"{result.peak_rss_mb[f'reference workers={reference_workers[0]}']:.0f}"]
        rows.append(row)
    return rows


def table_header(reference_workers: list[int]) -> list[str]:
    header = ["model", "px", "ch", "precision", "project img/s"]
    for count in reference_workers:
        header += [f"reference img/s (workers={count})", f"project / reference (workers={count})"]
    header += ["GFLOP per image", "reference GFLOP per image", "achieved GFLOP/s", "of peak", "peak RSS MB project", f"peak RSS MB reference (workers={reference_workers[0]})"]
    return header


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in [header, *rows])


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def cpu_model() -> str:
    """Return the CPU's model name from /proc/cpuinfo, or the platform module's processor name elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_lines(peaks: dict[str, float], threads: int | None, load_before: tuple, load_after: tuple) -> list[str]:
    import torch

    return [
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} with {plural(threads or torch.get_num_threads(), 'thread')} per side, "
        f"Python {platform.python_version()}",
        f"- matrix-multiply peak (2048 x 2048 torch.mm, best of 1 s): fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s",
        f"- load average (1, 5, 15 min) before: {', '.join(f'{value:.2f}' for value in load_before)}; after: {', '.join(f'{value:.2f}' for value in load_after)}",
    ]


def report(results: list[Result], peaks: dict[str, float], arguments: argparse.Namespace, argv: list[str], load_before: tuple) -> str:
    """Return the Markdown section that train_speed.py writes: how it was run, the machine, the table."""
    header, rows = table_header(arguments.reference_workers), table_rows(results, peaks, arguments.reference_workers)
    command = shlex.join([".venv/bin/python", "benchmarks/train_speed.py", *argv])
    iterations = ", ".join(f"{result.configuration.model} {result.configuration.size} px {result.configuration.channels} ch: {result.iterations_per_repeat}" for result in results)
    lines = [
        BEGIN_MARKER,
        f"Written by `{command}` on {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}.",
        "",
        *machine_lines(peaks, arguments.threads, load_before, os.getloadavg()),
        f"- {plural(arguments.repeats, 'timed block')} per side, alternating; iterations per block: {iterations}",
        "",
        markdown_table(header, rows),
        "",
        "Ratios are the median over the repeats of project / reference images per second, with their range in brackets.",
        "GFLOP per image counts one training iteration (forward and backward passes of every update) divided by the batch size;",
        "the reference's count is higher for the GANs because its generator update also computes the discriminator's weight gradients.",
        "`achieved` is the project's rate, and `of peak` compares it with the matrix-multiply rate of the precision used.",
        "Peak RSS is the high-water mark of each side's own process, DataLoader worker processes not included;",
        f"of it, the imports of torch, torchvision and the project took {import_memory(results)} before any data or network.",
        END_MARKER,
    ]
    return "\n".join(lines) + "\n"


def import_memory(results: list[Result]) -> str:
    sizes = [result.import_rss_mb for result in results if result.import_rss_mb is not None]
    return f"{min(sizes):.0f}-{max(sizes):.0f} MB" if sizes else "an unknown share (no /proc on this system)"


def write_report(path: Path, section: str) -> None:
    """Replace the text between the markers in `path` by `section`, or append it when the file has none."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n\n"
    start, end = text.find(BEGIN_MARKER), text.find(END_MARKER)
    if start != -1 and end != -1:
        text = text[:start] + section.rstrip("\n") + text[end + len(END_MARKER):]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text, encoding="utf-8")


def run(argv: list[str]) -> None:
    arguments = parse_arguments(argv)
    load_before = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory(prefix="train_speed_") as folder:
        data_root = prepare_data_root(Path(folder), configurations(arguments))
        for configuration in configurations(arguments):
            started = time.perf_counter()
            result = measure(configuration, arguments, data_root)
            results.append(result)
            project = statistics.median(result.rates["project"])
            references = ", ".join(
                f"{name} {statistics.median(rates):.0f} img/s" for name, rates in result.rates.items() if name != "project"
            )
            median, low, high = ratio_summary(result.rates["project"], result.rates[f"reference workers={arguments.reference_workers[0]}"])
            print(
                f"{configuration.model} {configuration.size} px {configuration.channels} ch: project ({result.precision}) {project:.0f} img/s, "
                f"{references}; ratio {median:.2f} ({low:.2f}-{high:.2f}); {time.perf_counter() - started:.0f} s",
                flush=True,
            )
    peaks = matmul_rates(arguments.threads)
    section = report(results, peaks, arguments, argv, load_before)
    print()
    print(text_table(table_header(arguments.reference_workers), table_rows(results, peaks, arguments.reference_workers)))
    print("\n".join(machine_lines(peaks, arguments.threads, load_before, os.getloadavg())))
    try:
        write_report(arguments.output, section)
    except OSError as error:
        raise BenchmarkError(f"cannot write {arguments.output}: {error.strerror}; pass --output with a writable path") from None
    print(f"wrote the table into {arguments.output}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        run(argv)
    except BenchmarkError as error:
        print(f"train_speed.py: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ntrain_speed.py: interrupted; BENCHMARKS.md was not changed", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
