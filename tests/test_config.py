"""Hyperparameter files, NAME=VALUE overrides and validation."""

import subprocess
import sys

import pytest

from common.config import load_hyperparameters, parse_overrides, read_hyperparameters, validate, write_hyperparameters
from common.errors import ConfigError
from conftest import REPO_ROOT

DCGAN_FILE = REPO_ROOT / "DCGAN" / "hyperparameters.py"

ORIGINAL_NAMES = [
    "DATASET_NAME", "IMAGE_SIZE", "IMAGE_CHANNELS", "NB_EPOCH", "COMPLEXITY", "MINIBATCH_SIZE", "PACKING",
    "LEARNING_RATE", "NB_DISCRIMINATOR_STEP", "NB_GENERATOR_STEP", "NB_IMAGE_TO_GENERATE", "LATENT_INPUT",
    "REAL_LABEL_SMOOTHING", "FAKE_LABEL_SMOOTHING", "DROPOUT_PROB", "BETA1", "BETA2", "WEIGHTS_MEAN", "WEIGHTS_STD",
    "SEED", "DEVICE", "MAX_TRAIN_IMAGES",
]


def test_dcgan_file_has_every_name_with_comment():
    entries = read_hyperparameters(DCGAN_FILE)
    for name in ORIGINAL_NAMES:
        assert name in entries, name
        assert entries[name].comment, f"{name} has no comment"
    assert validate({name: entry.value for name, entry in entries.items()})


def test_file_is_parsed_not_executed(tmp_path):
    path = tmp_path / "hyperparameters.py"
    path.write_text('import os\nos.system("touch executed")\nNB_EPOCH = 3  # epochs\nlower_case = 1\n')
    entries = read_hyperparameters(path)
    assert list(entries) == ["NB_EPOCH"]
    assert entries["NB_EPOCH"].value == 3
    assert entries["NB_EPOCH"].comment == "epochs"
    assert not (tmp_path / "executed").exists()


def test_expression_value_is_rejected(tmp_path):
    path = tmp_path / "hyperparameters.py"
    path.write_text("NB_EPOCH = 2 * 3\n")
    with pytest.raises(ConfigError, match="line 1: NB_EPOCH must be a plain literal"):
        read_hyperparameters(path)


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("NB_EPOCH=2", 2),
        ("LEARNING_RATE=1e-3", 0.001),
        ("DATASET_NAME=FASHIONMNIST", "FASHIONMNIST"),
        ("DATASET_NAME='MNIST'", "MNIST"),
        ("MAX_TRAIN_IMAGES=None", None),
        ("REAL_LABEL_SMOOTHING=True", True),
        ("DEVICE=cuda:1", "cuda:1"),
    ],
)
def test_override_parsed_as_literal(argument, expected):
    name = argument.partition("=")[0]
    overrides = parse_overrides([argument], read_hyperparameters(DCGAN_FILE))
    assert overrides == {name: expected}
    assert type(overrides[name]) is type(expected)


def test_unknown_name_suggests_closest():
    with pytest.raises(ConfigError) as raised:
        parse_overrides(["NB_EPOCHS=2"], read_hyperparameters(DCGAN_FILE))
    assert "unknown hyperparameter 'NB_EPOCHS'" in str(raised.value)
    assert "did you mean NB_EPOCH?" in str(raised.value)


def test_repeated_name_last_wins():
    assert parse_overrides(["NB_EPOCH=1", "NB_EPOCH=2"], read_hyperparameters(DCGAN_FILE)) == {"NB_EPOCH": 2}


def test_argument_without_equals_rejected():
    with pytest.raises(ConfigError, match="expected NAME=VALUE"):
        parse_overrides(["NB_EPOCH"], read_hyperparameters(DCGAN_FILE))


@pytest.mark.parametrize("model", ["DCGAN", "LSGAN", "CGAN"])
def test_gan_files_have_folder_names(model):
    entries = read_hyperparameters(REPO_ROOT / model / "hyperparameters.py")
    assert {name: entries[name].value for name in FOLDER_NAMES} == {"DATASET_PATH": None, "RESIZE_POLICY": "auto", "BACKGROUND_COLOR": "white"}
    for name in FOLDER_NAMES:
        assert entries[name].comment, f"{name} has no comment"


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("BACKGROUND_COLOR=black", "black"),
        ("BACKGROUND_COLOR=#102030", "#102030"),
        ("BACKGROUND_COLOR=(16,32,48)", (16, 32, 48)),
        ("RESIZE_POLICY=PAD", "pad"),
        ("DATASET_PATH=~/my pictures", "~/my pictures"),
    ],
)
def test_folder_values_accepted(argument, expected):
    values, _ = load_hyperparameters(DCGAN_FILE, [argument])
    assert values[argument.partition("=")[0]] == expected


def test_folder_needs_dataset_path():
    with pytest.raises(ConfigError) as raised:
        load_hyperparameters(DCGAN_FILE, ["DATASET_NAME=folder"])
    assert str(raised.value).startswith("invalid hyperparameter DATASET_PATH=None: DATASET_NAME='FOLDER' needs the path")
    values, _ = load_hyperparameters(DCGAN_FILE, ["DATASET_NAME=folder", "DATASET_PATH=/tmp/pictures"])
    assert values["DATASET_NAME"] == "FOLDER"


def test_dataset_name_case_insensitive():
    values, _ = load_hyperparameters(DCGAN_FILE, ["DATASET_NAME=fashionmnist"])
    assert values["DATASET_NAME"] == "FASHIONMNIST"


INVALID_CASES = [
    ("IMAGE_SIZE=48", "IMAGE_SIZE=48", "32 or 64"),
    ("DATASET_NAME=CIFAR", "DATASET_NAME='CIFAR'", "one of MNIST, FASHIONMNIST, PAINTINGS, POKEMON, FOLDER"),
    ("IMAGE_CHANNELS=2", "IMAGE_CHANNELS=2", "1, 3 or None"),
    ("NB_EPOCH=0", "NB_EPOCH=0", "a positive integer"),
    ("NB_EPOCH=2.5", "NB_EPOCH=2.5", "a positive integer"),
    ("NB_EPOCH=True", "NB_EPOCH=True", "a positive integer"),
    ("COMPLEXITY=-4", "COMPLEXITY=-4", "a positive integer"),
    ("MINIBATCH_SIZE=1", "MINIBATCH_SIZE=1", "at least 2"),
    ("PACKING=0", "PACKING=0", "a positive integer"),
    ("LEARNING_RATE=-0.1", "LEARNING_RATE=-0.1", "a positive number"),
    ("LEARNING_RATE=fast", "LEARNING_RATE='fast'", "a positive number"),
    ("NB_DISCRIMINATOR_STEP=0", "NB_DISCRIMINATOR_STEP=0", "a positive integer"),
    ("NB_GENERATOR_STEP=-1", "NB_GENERATOR_STEP=-1", "a positive integer"),
    ("NB_IMAGE_TO_GENERATE=0", "NB_IMAGE_TO_GENERATE=0", "a positive integer"),
    ("LATENT_INPUT=0", "LATENT_INPUT=0", "a positive integer"),
    ("DROPOUT_PROB=1.0", "DROPOUT_PROB=1.0", "[0, 1)"),
    ("BETA1=1", "BETA1=1", "[0, 1)"),
    ("BETA2=-0.5", "BETA2=-0.5", "[0, 1)"),
    ("REAL_LABEL_SMOOTHING=yes", "REAL_LABEL_SMOOTHING='yes'", "True or False"),
    ("FAKE_LABEL_SMOOTHING=1", "FAKE_LABEL_SMOOTHING=1", "True or False"),
    ("WEIGHTS_STD=0", "WEIGHTS_STD=0", "a positive number"),
    ("WEIGHTS_MEAN=nan", "WEIGHTS_MEAN='nan'", "a finite number"),
    ("SEED=-1", "SEED=-1", "None or an integer"),
    ("MAX_TRAIN_IMAGES=0", "MAX_TRAIN_IMAGES=0", "None or a positive integer"),
    ("RESIZE_POLICY=stretch", "RESIZE_POLICY='stretch'", "one of auto, crop, pad"),
    ("BACKGROUND_COLOR=blurple", "BACKGROUND_COLOR='blurple'", "a colour name"),
    ("BACKGROUND_COLOR=(0,0,256)", "BACKGROUND_COLOR=(0, 0, 256)", "(R, G, B) tuple of integers in 0..255"),
    ("BACKGROUND_COLOR=(0,0)", "BACKGROUND_COLOR=(0, 0)", "(R, G, B) tuple"),
    ("DATASET_PATH=3", "DATASET_PATH=3", "None or the path of an image folder"),
]

FOLDER_NAMES = ["DATASET_PATH", "RESIZE_POLICY", "BACKGROUND_COLOR"]


@pytest.mark.parametrize(("argument", "shown", "allowed"), INVALID_CASES)
def test_invalid_value_message(argument, shown, allowed):
    with pytest.raises(ConfigError) as raised:
        load_hyperparameters(DCGAN_FILE, [argument])
    message = str(raised.value)
    assert message.startswith(f"invalid hyperparameter {shown}: expected ")
    assert allowed in message
    assert "\n" not in message


def test_batch_too_small_for_packing():
    with pytest.raises(ConfigError) as raised:
        load_hyperparameters(DCGAN_FILE, ["MINIBATCH_SIZE=5", "PACKING=3"])
    assert "MINIBATCH_SIZE=5 with PACKING=3" in str(raised.value)


def test_written_copy_keeps_format(tmp_path):
    values, _ = load_hyperparameters(DCGAN_FILE, ["NB_EPOCH=3", "LEARNING_RATE=0.001"])
    copy = tmp_path / "hyperparameters.py"
    write_hyperparameters(DCGAN_FILE, values, copy)

    original_lines = DCGAN_FILE.read_text().splitlines()
    copied_lines = copy.read_text().splitlines()
    changed = [line for old, line in zip(original_lines, copied_lines) if old != line]
    assert len(copied_lines) == len(original_lines)
    assert changed == ["NB_EPOCH = 3  # passes over the training set", "LEARNING_RATE = 0.001  # Adam learning rate of both networks"]
    reread = {name: entry.value for name, entry in read_hyperparameters(copy).items()}
    assert reread == values


def run_dcgan(*arguments, cwd=REPO_ROOT):
    return subprocess.run([sys.executable, "DCGAN/DCGAN.py", *arguments], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["IMAGE_SIZE=48"], "DCGAN.py: error: invalid hyperparameter IMAGE_SIZE=48: expected 32 or 64"),
        (["NB_EPHOC=2"], "DCGAN.py: error: unknown hyperparameter 'NB_EPHOC': did you mean NB_EPOCH?"),
        (["DEVICE=tpu"], "DCGAN.py: error: invalid hyperparameter DEVICE='tpu'"),
    ],
)
def test_script_reports_one_line_and_exits_2(arguments, expected):
    result = run_dcgan(*arguments)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith(expected)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_script_rejects_missing_cuda():
    result = run_dcgan("DEVICE=cuda")
    assert result.returncode == 2
    assert "CUDA is not available here" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_every_hyperparameter():
    result = run_dcgan("--help")
    assert result.returncode == 0
    for name in ORIGINAL_NAMES:
        assert f"  {name} = " in result.stdout, name
    assert "IMAGE_SIZE = 32" in result.stdout
    assert "# side of the square training images, in pixels: 32 or 64" in result.stdout
