"""Hyperparameters: read a model's hyperparameters.py, apply NAME=VALUE overrides, validate, save.

The file is parsed, never executed: each top-level `NAME = literal  # comment` line is one
hyperparameter, so the file stays plain constants that a user edits by hand.
"""

import ast
import difflib
import io
import math
import numbers
import tokenize
from dataclasses import dataclass
from pathlib import Path

from common.errors import ConfigError

DATASET_NAMES = ("MNIST", "FASHIONMNIST", "PAINTINGS", "POKEMON", "FOLDER")
RESIZE_POLICIES = ("auto", "crop", "pad")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class Hyperparameter:
    name: str
    value: object
    comment: str
    line: int  # 1-based first line of the value expression in the source file
    end_line: int  # 1-based last line of the value expression
    value_span: tuple[int, int]  # column where the value starts on `line` and ends on `end_line`


def read_hyperparameters(path: Path) -> dict[str, Hyperparameter]:
    """Parse the UPPER_CASE literal assignments of a hyperparameters file, in file order."""
    source = Path(path).read_text(encoding="utf-8")
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as error:
        raise ConfigError(f"{path} line {error.lineno}: invalid Python syntax: {error.msg}") from None
    comments = _trailing_comments(source)

    hyperparameters = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = node.targets[0]
        if not (isinstance(target, ast.Name) and target.id.isupper()):
            continue
        try:
            value = ast.literal_eval(node.value)
        except ValueError:
            raise ConfigError(
                f"{path} line {node.lineno}: {target.id} must be a plain literal "
                "(a number, string, True/False or None), not an expression"
            ) from None
        hyperparameters[target.id] = Hyperparameter(
            name=target.id,
            value=value,
            comment=comments.get(node.end_lineno) or comments.get(node.lineno, ""),
            line=node.value.lineno,
            end_line=node.value.end_lineno,
            value_span=(node.value.col_offset, node.value.end_col_offset),
        )
    return hyperparameters


def _trailing_comments(source: str) -> dict[int, str]:
    """Map line numbers to the text of the comment that ends that line."""
    comments = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    return comments


def parse_overrides(arguments: list[str], known: dict[str, Hyperparameter]) -> dict[str, object]:
    """Turn NAME=VALUE arguments into values; a VALUE that is no Python literal stays a string.

    A name given twice takes its last value, as with repeated command-line options.
    """
    overrides = {}
    for argument in arguments:
        name, separator, text = argument.partition("=")
        name = name.strip()
        if not separator or not name:
            raise ConfigError(f"invalid argument {argument!r}: expected NAME=VALUE, for example NB_EPOCH=2")
        if name not in known:
            raise ConfigError(_unknown_name_message(name, known))
        try:
            overrides[name] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            overrides[name] = text.strip()
    return overrides


def _unknown_name_message(name: str, known: dict[str, Hyperparameter]) -> str:
    message = f"unknown hyperparameter {name!r}"
    matches = difflib.get_close_matches(name.upper(), list(known), n=1, cutoff=0.5)
    if matches:
        message += f": did you mean {matches[0]}?"
    return message + (" " if message.endswith("?") else ". ") + "Run with --help to list them."


# Each rule is (check, what is allowed); a check gets the value and returns True when it is valid.
def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _positive_int(value) -> bool:
    return _is_int(value) and value > 0


def _positive_real(value) -> bool:
    return _is_real(value) and value > 0


def _probability(value) -> bool:
    return _is_real(value) and 0 <= value < 1


def _color(value) -> bool:
    from PIL import ImageColor  # imported only when BACKGROUND_COLOR is checked

    if isinstance(value, str):
        try:
            ImageColor.getrgb(value)
        except ValueError:
            return False
        return True
    return isinstance(value, tuple) and len(value) == 3 and all(_is_int(channel) and 0 <= channel <= 255 for channel in value)


POSITIVE_INT = (_positive_int, "a positive integer")
POSITIVE_REAL = (_positive_real, "a positive number")
PROBABILITY = (_probability, "a number in [0, 1)")
BOOLEAN = (lambda value: isinstance(value, bool), "True or False")

RULES = {
    "DATASET_NAME": (lambda value: value in DATASET_NAMES, "one of " + ", ".join(DATASET_NAMES)),
    "DATASET_PATH": (lambda value: value is None or (isinstance(value, str) and value.strip() != ""), 'None or the path of an image folder, such as "~/pictures/cats"'),
    "RESIZE_POLICY": (lambda value: value in RESIZE_POLICIES, "one of " + ", ".join(RESIZE_POLICIES)),
    "BACKGROUND_COLOR": (_color, 'a colour name such as "white", a hex string such as "#ffffff" or an (R, G, B) tuple of integers in 0..255'),
    "IMAGE_SIZE": (lambda value: _is_int(value) and value in (32, 64), "32 or 64"),
    "IMAGE_CHANNELS": (lambda value: value is None or (_is_int(value) and value in (1, 3)), "1, 3 or None"),
    "MAX_TRAIN_IMAGES": (lambda value: value is None or _positive_int(value), "None or a positive integer"),
    "MAX_TEST_IMAGES": (lambda value: value is None or _positive_int(value), "None or a positive integer"),
    "NB_EPOCH": POSITIVE_INT,
    "COMPLEXITY": POSITIVE_INT,
    "MINIBATCH_SIZE": (lambda value: _is_int(value) and value >= 2, "an integer of at least 2"),
    "PACKING": POSITIVE_INT,
    "LEARNING_RATE": POSITIVE_REAL,
    "NB_DISCRIMINATOR_STEP": POSITIVE_INT,
    "NB_GENERATOR_STEP": POSITIVE_INT,
    "NB_IMAGE_TO_GENERATE": POSITIVE_INT,
    "LATENT_INPUT": POSITIVE_INT,
    "CODE_SIZE": POSITIVE_INT,
    "NUMBER_LABELS": POSITIVE_INT,
    "REAL_LABEL_SMOOTHING": BOOLEAN,
    "FAKE_LABEL_SMOOTHING": BOOLEAN,
    "DROPOUT_PROB": PROBABILITY,
    "BETA1": PROBABILITY,
    "BETA2": PROBABILITY,
    "WEIGHTS_MEAN": (_is_real, "a finite number"),
    "WEIGHTS_STD": POSITIVE_REAL,
    "KL_WEIGHT": (lambda value: _is_real(value) and value >= 0, "a number of at least 0"),
    "SEED": (lambda value: value is None or (_is_int(value) and value >= 0), "None or an integer of at least 0"),
    "METRICS_SAMPLES": (lambda value: _is_int(value) and (value == 0 or value >= 4), "0 (no metrics) or an integer of at least 4"),
    "METRICS_EVERY": (lambda value: _is_int(value) and value >= 0, "an integer of at least 0"),
    "DEVICE": (lambda value: isinstance(value, str) and value != "", 'a device name such as "auto", "cpu" or "cuda:0"'),
    "PRECISION": (lambda value: value in PRECISIONS, "one of " + ", ".join(PRECISIONS)),
}


def validate(values: dict[str, object]) -> dict[str, object]:
    """Check every value against its rule; return the values with names normalised (DATASET_NAME in upper case, RESIZE_POLICY and PRECISION in lower case)."""
    values = dict(values)
    if isinstance(values.get("DATASET_NAME"), str):
        values["DATASET_NAME"] = values["DATASET_NAME"].upper()
    for name in ("RESIZE_POLICY", "PRECISION"):
        if isinstance(values.get(name), str):
            values[name] = values[name].lower()

    for name, value in values.items():
        if name not in RULES:
            continue
        check, allowed = RULES[name]
        if not check(value):
            raise ConfigError(f"invalid hyperparameter {name}={value!r}: expected {allowed}")

    if values.get("DATASET_NAME") == "FOLDER" and values.get("DATASET_PATH") is None:
        raise ConfigError(
            "invalid hyperparameter DATASET_PATH=None: DATASET_NAME='FOLDER' needs the path of your image folder, "
            'for example DATASET_PATH="/home/me/pictures"'
        )

    batch_size, packing = values.get("MINIBATCH_SIZE"), values.get("PACKING")
    if batch_size is not None and packing is not None and batch_size // packing < 2:
        raise ConfigError(
            f"invalid hyperparameters MINIBATCH_SIZE={batch_size} with PACKING={packing}: "
            "a batch must hold at least 2 packs for batch norm, so MINIBATCH_SIZE must be at least 2 x PACKING"
        )
    return values


def load_hyperparameters(path: Path, arguments: list[str]) -> tuple[dict[str, object], dict[str, Hyperparameter]]:
    """Read `path`, apply the NAME=VALUE `arguments` and validate; return the values and the parsed file."""
    defaults = read_hyperparameters(path)
    values = {name: entry.value for name, entry in defaults.items()}
    values.update(parse_overrides(arguments, defaults))
    return validate(values), defaults


def write_hyperparameters(source_path: Path, values: dict[str, object], destination: Path) -> None:
    """Copy the hyperparameters file to `destination` with each value replaced by the one used."""
    lines = Path(source_path).read_text(encoding="utf-8").splitlines(keepends=True)
    entries = read_hyperparameters(source_path)
    for name, entry in entries.items():
        if name not in values or values[name] == entry.value and type(values[name]) is type(entry.value):
            continue
        start, end = entry.value_span
        first, last = entry.line - 1, entry.end_line - 1
        lines[first] = lines[first][:start] + repr(values[name]) + lines[last][end:]
        for index in range(first + 1, last + 1):  # a value written over several lines becomes one line
            lines[index] = ""
    Path(destination).write_text("".join(lines), encoding="utf-8")


def describe_hyperparameters(entries: dict[str, Hyperparameter]) -> str:
    """Format one `NAME = value  # comment` line per hyperparameter, for --help."""
    width = max((len(f"{name} = {entry.value!r}") for name, entry in entries.items()), default=0)
    lines = []
    for name, entry in entries.items():
        assignment = f"{name} = {entry.value!r}"
        lines.append(f"  {assignment:<{width}}  # {entry.comment}" if entry.comment else f"  {assignment}")
    return "\n".join(lines)
