"""The command line shared by every model script.

    python3 <Model>.py [NAME=VALUE ...]                  train
    python3 <Model>.py --resume [NAME=VALUE ...]         continue the run saved in results_<DATASET_NAME>/checkpoint.pt
    python3 <Model>.py --generate N [--checkpoint PATH]  sample from a trained model instead
    python3 <Model>.py --evaluate [--checkpoint PATH]    measure the quality of a trained model's samples
"""

import argparse
import os
import shlex
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from common.config import RULES, describe_hyperparameters, load_hyperparameters, read_hyperparameters
from common.errors import ConfigError, UserError

if TYPE_CHECKING:
    from common.adversarial import GANModel

# A training function gets the validated values, the hyperparameters file they came from, the results folder,
# and whether to resume the run saved there.
TrainFunction = Callable[[dict, Path, Path, bool], None]
# A sampling function gets the parsed command line, the validated values and the results folder.
SampleFunction = Callable[[argparse.Namespace, dict, Path], None]


def run_script(script_file: str, description: str, train: TrainFunction, sample: SampleFunction | None = None, conditional: bool = False) -> None:
    """Parse the command line of a model script, then train or sample.

    A user error ends the script with one line on stderr and no traceback. `sample` runs instead
    of `train` when --generate or --interpolate is given; `conditional` adds the --label option.
    """
    script = Path(script_file).resolve()
    hyperparameters_file = script.parent / "hyperparameters.py"
    sys.stdout.reconfigure(line_buffering=True)  # epoch lines reach a log file as they happen, not at exit
    signal.signal(signal.SIGTERM, raise_terminated)
    worker = int(os.environ.get("RANK", "0"))  # under torchrun, only rank 0 logs
    if worker > 0:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stays open for the life of the process
    try:
        parser = build_parser(script.name, description, hyperparameters_file, sampling=sample is not None, conditional=conditional)
        arguments = parser.parse_args()
        hyperparameters, _ = load_hyperparameters(hyperparameters_file, arguments.overrides)
        results = script.parent / f"results_{hyperparameters['DATASET_NAME']}"
        if sample is not None and (arguments.generate is not None or arguments.interpolate or arguments.evaluate):
            if arguments.resume:
                raise ConfigError("--resume applies only to training, not with --generate, --interpolate or --evaluate")
            sample(arguments, hyperparameters, results)
        else:
            if sample is not None:
                reject_sampling_options(arguments)
            train(hyperparameters, hyperparameters_file, results, arguments.resume)
    except UserError as error:
        fail(script, str(error), error.exit_status, worker)
    except KeyError as error:
        name = error.args[0] if error.args else None
        if name not in RULES:
            raise
        # A line deleted from hyperparameters.py: the code needs every hyperparameter of its model.
        fail(script, f"missing hyperparameter {name} in {hyperparameters_file}: add its line back (see the README for its default)", 2, worker)
    except KeyboardInterrupt as interruption:
        # A second Ctrl-C or SIGTERM while this message is written ends the process at once.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        report = other_rank_failure()  # torchrun stops the other ranks when one fails
        if report:
            fail(script, report, 1, worker)
        if worker == 0:
            print(f"\n{script.name}: {interruption_message(sys.argv[1:])}", file=sys.stderr)
        sys.exit(143 if isinstance(interruption, Terminated) else 130)
    except Exception:
        # Under torchrun, a process whose peer failed gets an error from the collective it was waiting in:
        # report the peer's failure instead of that error's traceback.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        report = other_rank_failure()
        if not report:
            raise
        fail(script, report, 1, worker)
    except BrokenPipeError:  # output piped into a reader that stopped early, as in `--help | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the flush at exit raises nothing more
        sys.exit(1)


def fail(script: Path, message: str, status: int, worker: int) -> None:
    """Exit with `status` after one error line; under torchrun, rank 0 prints it and the other ranks leave it in the store for rank 0."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # torchrun stopping this process must not cut the message short
    if worker > 0:
        from common.distributed import report_failure

        report_failure(message)
    else:
        print(f"{script.name}: error: {message}", file=sys.stderr)
    sys.exit(status)


def other_rank_failure() -> str | None:
    """Return what made another torchrun process stop, or None when running alone or when no process failed."""
    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return None
    from common.distributed import failure_report

    report = failure_report()
    return f"the run stopped because {report}" if report else None


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: checkpoint writes are atomic, so stopping at any point keeps the last one."""


def raise_terminated(signal_number, frame) -> None:
    raise Terminated


def interruption_message(arguments: list[str]) -> str:
    """Say what an interrupted run kept and how to resume it.

    The checkpoint is the one this process wrote or resumed from, never an earlier run's. It is
    read from common.training's record rather than from disk, because torch may be half imported.
    """
    training = sys.modules.get("common.training")
    checkpoint = getattr(training, "progress", None) and training.progress.checkpoint
    if not checkpoint:
        return "interrupted before an epoch finished, so no checkpoint was written"
    launcher = [python_command()]
    world_size, local_world_size = os.environ.get("WORLD_SIZE", "1"), os.environ.get("LOCAL_WORLD_SIZE", "1")
    if int(world_size) > 1:
        # One machine: the usual --standalone launch. Several: the same command as before on each machine.
        single_machine = ["--standalone"] if world_size == local_world_size else []
        launcher = ["torchrun", *single_machine, f"--nproc_per_node={local_world_size}"]
    command = shlex.join([*launcher, sys.argv[0], "--resume", *(argument for argument in arguments if argument != "--resume")])
    return f"interrupted; {checkpoint} keeps the last finished epoch, {training.progress.epoch}; continue with: {command}"


def python_command() -> str:
    """Return "python3" when it starts this interpreter, else this interpreter's path (a virtual environment not activated)."""
    on_path = shutil.which("python3")
    if on_path and Path(on_path).resolve() == Path(sys.executable).resolve():
        return "python3"
    return sys.executable


def reject_sampling_options(arguments: argparse.Namespace) -> None:
    """Stop when a sampling option is given without --generate, --interpolate or --evaluate, rather than silently training."""
    for option in ("checkpoint", "seed", "label"):
        if getattr(arguments, option, None) is not None:
            raise ConfigError(f"--{option} applies only with --generate, --interpolate or --evaluate")


def positive_int(text: str) -> int:
    """Parse a command-line count that must be at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: expected a positive integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid count {value}: expected a positive integer")
    return value


def build_parser(program: str, description: str, hyperparameters_file: Path, sampling: bool = False, conditional: bool = False) -> argparse.ArgumentParser:
    """Build the argument parser; its help lists every hyperparameter with its value and comment."""
    try:
        listing = describe_hyperparameters(read_hyperparameters(hyperparameters_file))
    except (ConfigError, OSError) as error:
        listing = f"  (cannot read {hyperparameters_file}: {error})"
    parser = argparse.ArgumentParser(
        prog=program,
        description=description,
        epilog=f"hyperparameters (from {hyperparameters_file}), each overridable with NAME=VALUE:\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="NAME=VALUE",
        help="override a hyperparameter for this run; VALUE is read as a Python literal (a bare word is a string)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run saved in results_<DATASET_NAME>/checkpoint.pt after its last finished epoch; "
        "give the same hyperparameters, except NB_EPOCH, which may grow",
    )
    if sampling:
        group = parser.add_argument_group("sampling from a trained model (no training; no dataset needed, except for --evaluate)")
        group.add_argument("--generate", type=positive_int, metavar="N", help="write a grid and N single PNG images into results_<DATASET_NAME>/generated/")
        group.add_argument("--interpolate", action="store_true", help="write a strip of images along a spherical path between two latent points")
        group.add_argument("--evaluate", action="store_true", help="print the quality metrics of the checkpoint's model (see the README); reads its dataset")
        group.add_argument("--checkpoint", type=Path, metavar="PATH", help="checkpoint to load (default: results_<DATASET_NAME>/checkpoint.pt)")
        group.add_argument("--seed", type=int, metavar="S", help="seed of the latent samples, for repeatable output (default: a fresh one)")
        if conditional:
            group.add_argument("--label", metavar="K", help="class index or class name to generate (default: one row per class)")
    return parser


def run_gan_script(script_file: str, description: str, load_model: Callable[[], "GANModel"], conditional: bool = False) -> None:
    """Run a GAN script: train by default, or sample from its checkpoint with --generate or --interpolate.

    `load_model` returns the script's GANModel. It is called only once the command line is
    valid, so that --help and hyperparameter errors return without loading torch.
    """

    def train(hyperparameters: dict, hyperparameters_file: Path, results: Path, resume: bool) -> None:
        from common.adversarial import train_gan

        train_gan(load_model(), hyperparameters, hyperparameters_file, results, resume)

    def sample(arguments: argparse.Namespace, hyperparameters: dict, results: Path) -> None:
        from common.sampling import sample_gan

        sample_gan(load_model(), arguments, hyperparameters, results)

    run_script(script_file, description, train, sample, conditional)
