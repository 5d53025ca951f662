"""The command line shared by every model script: `python3 <Model>.py [NAME=VALUE ...]`."""

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from common.config import describe_hyperparameters, load_hyperparameters, read_hyperparameters
from common.errors import ConfigError, UserError

# A training function gets the validated values, the hyperparameters file they came from and the results folder.
TrainFunction = Callable[[dict, Path, Path], None]


def run_script(script_file: str, description: str, train: TrainFunction) -> None:
    """Parse the command line of a model script and train; a user error ends it with one line and no traceback."""
    script = Path(script_file).resolve()
    hyperparameters_file = script.parent / "hyperparameters.py"
    try:
        arguments = build_parser(script.name, description, hyperparameters_file).parse_args()
        hyperparameters, _ = load_hyperparameters(hyperparameters_file, arguments.overrides)
        results = script.parent / f"results_{hyperparameters['DATASET_NAME']}"
        train(hyperparameters, hyperparameters_file, results)
    except UserError as error:
        print(f"{script.name}: error: {error}", file=sys.stderr)
        sys.exit(error.exit_status)
    except KeyboardInterrupt:
        print(f"\n{script.name}: interrupted; the checkpoint of the last finished epoch is kept", file=sys.stderr)
        sys.exit(130)


def build_parser(program: str, description: str, hyperparameters_file: Path) -> argparse.ArgumentParser:
    """Build the argument parser; its help lists every hyperparameter with its value and comment."""
    try:
        listing = describe_hyperparameters(read_hyperparameters(hyperparameters_file))
    except (ConfigError, OSError) as error:
        listing = f"  (cannot read {hyperparameters_file}: {error})"
    parser = argparse.ArgumentParser(
        prog=f"python3 {program}",
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
    return parser
