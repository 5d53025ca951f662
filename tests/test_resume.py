"""Resuming a run: a run stopped after k epochs and resumed equals the uninterrupted run, for every model."""

import csv
import importlib.util
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from common.config import load_hyperparameters
from common.errors import ConfigError, UserError
from common.training import load_resumable_checkpoint, start_run
from tests.conftest import MODEL_FOLDERS, run_script

# A tiny run: 3 iterations an epoch on real MNIST, small networks.
TINY_RUN = ["MAX_TRAIN_IMAGES=96", "MINIBATCH_SIZE=32", "COMPLEXITY=4", "NB_IMAGE_TO_GENERATE=2", "DEVICE=cpu", "SEED=11", "METRICS_SAMPLES=0"]
AUTOENCODER_RUN = ["MAX_TEST_IMAGES=64", "CODE_SIZE=4"]


@contextmanager
def model_script(folder: Path):
    """Import a model script as a module, with its folder first on sys.path for its own `models` import."""
    sys.modules.pop("models", None)
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location(f"script_{folder.name}", folder / f"{folder.name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("models", None)


def train(folder: Path, results: Path, overrides: list[str], resume: bool = False) -> None:
    """Train the model of `folder` in this process, as its script would, writing into `results`."""
    hyperparameters_file = folder / "hyperparameters.py"
    arguments = TINY_RUN + (AUTOENCODER_RUN if folder.name in ("Autoencoder", "VAE") else []) + overrides
    hyperparameters, _ = load_hyperparameters(hyperparameters_file, arguments)
    with model_script(folder) as script:
        if hasattr(script, "load_model"):
            from common.adversarial import train_gan

            train_gan(script.load_model(), hyperparameters, hyperparameters_file, results, resume)
        else:
            script.train(hyperparameters, hyperparameters_file, results, resume)


def loss_columns(path: Path) -> list[dict]:
    """Return the rows of metrics.csv without the timing columns, which differ between runs."""
    with open(path, newline="") as file:
        return [{name: value for name, value in row.items() if name not in ("seconds", "images_per_second")} for row in csv.DictReader(file)]


def assert_same_state(first, second, where="checkpoint"):
    """Assert two nested checkpoint values are identical, tensors bit for bit."""
    if isinstance(first, torch.Tensor):
        assert torch.equal(first, second), where
    elif isinstance(first, dict):
        assert first.keys() == second.keys(), where
        for key in first:
            assert_same_state(first[key], second[key], f"{where}[{key!r}]")
    elif isinstance(first, (list, tuple)):
        assert len(first) == len(second), where
        for index, (a, b) in enumerate(zip(first, second)):
            assert_same_state(a, b, f"{where}[{index}]")
    else:
        assert first == second, where


@pytest.mark.slow
@pytest.mark.parametrize("model", MODEL_FOLDERS)
def test_resumed_run_equals_uninterrupted_run(repository, model):
    folder = repository / model
    whole, resumed = repository / "whole", repository / "resumed"
    train(folder, whole, ["NB_EPOCH=3"])
    train(folder, resumed, ["NB_EPOCH=1"])
    train(folder, resumed, ["NB_EPOCH=3"], resume=True)

    expected = torch.load(whole / "checkpoint.pt", weights_only=True)
    actual = torch.load(resumed / "checkpoint.pt", weights_only=True)
    assert actual["epoch"] == 3
    # Networks, optimizers, fixed grid inputs, loss history and generator states all match.
    assert_same_state(expected, actual)
    assert loss_columns(resumed / "metrics.csv") == loss_columns(whole / "metrics.csv")
    assert len(loss_columns(whole / "metrics.csv")) == 3
    grids = sorted(path.relative_to(whole) for path in whole.rglob("*epoch_*.png"))
    assert grids, "no grid written"
    for grid in grids:  # the same seed gives the same grids, before and after resuming
        assert (whole / grid).read_bytes() == (resumed / grid).read_bytes(), grid


@pytest.mark.slow
def test_resume_rejects_changed_hyperparameters(repository):
    folder = repository / "DCGAN"
    results = repository / "results"
    train(folder, results, ["NB_EPOCH=1"])
    with pytest.raises(ConfigError) as raised:
        train(folder, results, ["NB_EPOCH=2", "IMAGE_SIZE=64", "LATENT_INPUT=20"], resume=True)
    message = str(raised.value)
    assert "IMAGE_SIZE=64 (the run has 32)" in message
    assert "LATENT_INPUT=20 (the run has 100)" in message
    assert "NB_EPOCH" not in message

    with pytest.raises(ConfigError, match=r"has already trained 1 epochs; pass NB_EPOCH=2 or more"):
        train(folder, results, ["NB_EPOCH=1"], resume=True)
    # A refused resumption leaves the run as it was.
    assert torch.load(results / "checkpoint.pt", weights_only=True)["epoch"] == 1


def test_resume_needs_a_checkpoint(repository):
    with pytest.raises(UserError, match=r"no checkpoint to resume at .*checkpoint.pt; train without --resume"):
        train(repository / "VAE", repository / "results", ["NB_EPOCH=2"], resume=True)


@pytest.mark.slow
def test_resume_drops_metrics_of_unsaved_epochs(repository):
    folder = repository / "Autoencoder"
    results = repository / "results"
    train(folder, results, ["NB_EPOCH=1"])
    # An interruption between writing the epoch 2 row and its checkpoint leaves a row with no checkpoint.
    with open(results / "metrics.csv", "a") as file:
        file.write("2" + ",0" * 7 + "\n")
        file.write("hello world\n")
    (results / ".checkpoint.pt.12345.tmp").write_bytes(b"partial")
    train(folder, results, ["NB_EPOCH=2"], resume=True)
    rows = loss_columns(results / "metrics.csv")
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert float(rows[1]["train_loss"]) > 0
    assert not (results / ".checkpoint.pt.12345.tmp").exists()


@pytest.mark.slow
@pytest.mark.parametrize(("signal_number", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_then_resume(repository, signal_number, status):
    script = repository / "DCGAN" / "DCGAN.py"
    results = script.parent / "results_MNIST"
    process = subprocess.Popen(
        [sys.executable, script.name, *TINY_RUN, "MAX_TRAIN_IMAGES=640", "NB_EPOCH=200"],
        cwd=script.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while not (results / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal_number)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == status
    assert "Traceback" not in stderr
    epoch = torch.load(results / "checkpoint.pt", weights_only=True)["epoch"]
    assert f"DCGAN.py: interrupted; {results / 'checkpoint.pt'} keeps the last finished epoch, {epoch}; continue with: " in stderr
    assert " DCGAN.py --resume " in stderr
    assert not list(results.glob(".checkpoint.pt.*.tmp"))

    resumed = run_script(script, "--resume", *TINY_RUN, "MAX_TRAIN_IMAGES=640", f"NB_EPOCH={epoch + 1}")
    assert f"resuming after epoch {epoch}" in resumed.stdout
    assert torch.load(results / "checkpoint.pt", weights_only=True)["epoch"] == epoch + 1
    with open(results / "metrics.csv", newline="") as file:
        assert [int(row["epoch"]) for row in csv.DictReader(file)] == list(range(1, epoch + 2))


@pytest.mark.slow
def test_changed_hyperparameter_is_one_line(repository):
    script = repository / "LSGAN" / "LSGAN.py"
    run_script(script, *TINY_RUN, "NB_EPOCH=1")
    result = run_script(script, "--resume", *TINY_RUN, "NB_EPOCH=2", "COMPLEXITY=8", expect_status=2)
    assert result.stderr.count("\n") == 1
    assert "LSGAN.py: error: cannot resume from" in result.stderr
    assert "COMPLEXITY=8 (the run has 4)" in result.stderr


def test_sigkill_mid_write_keeps_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    writer = textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from common.checkpoints import save_atomically
        save_atomically({{"epoch": 1, "weights": torch.arange(10.0)}}, {str(path)!r})
        print("saved", flush=True)
        save_atomically({{"epoch": 2, "weights": torch.ones(100_000_000)}}, {str(path)!r})  # 400 MB
    """)
    process = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "saved\n"
    deadline = time.monotonic() + 60
    temporary = []
    while time.monotonic() < deadline:
        temporary = list(tmp_path.glob(".checkpoint.pt.*.tmp"))
        if temporary and temporary[0].stat().st_size > 1_000_000:
            break
    process.kill()
    process.wait()

    assert temporary and temporary[0].exists(), "the process was not killed in the middle of the large write"
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["epoch"] == 1
    assert torch.equal(checkpoint["weights"], torch.arange(10.0))


@pytest.mark.slow
def test_early_interruption_names_no_checkpoint(repository):
    script = repository / "DCGAN" / "DCGAN.py"
    run_script(script, *TINY_RUN, "NB_EPOCH=1")  # an earlier run, with a checkpoint
    process = subprocess.Popen(
        [sys.executable, script.name, *TINY_RUN, "MAX_TRAIN_IMAGES=20000", "NB_EPOCH=1"],
        cwd=script.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert process.stdout.readline().startswith("moved the results of an earlier run to ")
    assert "training on 20000 MNIST images" in process.stdout.readline()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert stderr.strip() == "DCGAN.py: interrupted before an epoch finished, so no checkpoint was written"


@pytest.mark.parametrize(("content", "reason"), [(b"", "damaged or not a checkpoint"), (b"hello", "damaged or not a checkpoint"), (bytes(range(256)) * 20, "damaged or not a checkpoint")])
def test_damaged_checkpoint_is_one_line(tmp_path, content, reason):
    (tmp_path / "checkpoint.pt").write_bytes(content)
    with pytest.raises(UserError) as raised:
        load_resumable_checkpoint(tmp_path / "checkpoint.pt", "DCGAN")
    assert reason in str(raised.value)
    assert "\n" not in str(raised.value)
    assert "weights_only" not in str(raised.value)


def test_missing_checkpoint_names_earlier_runs(tmp_path):
    earlier = tmp_path / "results_MNIST_20261204-120000"
    earlier.mkdir()
    (earlier / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(UserError) as raised:
        load_resumable_checkpoint(tmp_path / "results_MNIST" / "checkpoint.pt", "DCGAN")
    assert "checkpoints of other runs are in results_MNIST_20261204-120000" in str(raised.value)
    assert "rename an earlier run's folder back to results_MNIST" in str(raised.value)


def test_relative_dataset_path_saved_absolute(repository, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hyperparameters, _ = load_hyperparameters(repository / "DCGAN" / "hyperparameters.py", ["DATASET_NAME=FOLDER", "DATASET_PATH=pictures", "SEED=1", "DEVICE=cpu"])
    resolved, checkpoint, _ = start_run("DCGAN", hyperparameters, tmp_path / "results_FOLDER", resume=False)
    assert resolved["DATASET_PATH"] == str(tmp_path / "pictures")
    assert checkpoint is None


def test_missing_hyperparameter_line_is_one_line(repository):
    file = repository / "DCGAN" / "hyperparameters.py"
    file.write_text("".join(line for line in file.read_text().splitlines(keepends=True) if not line.startswith("PACKING")))
    result = run_script(repository / "DCGAN" / "DCGAN.py", *TINY_RUN, "NB_EPOCH=1", expect_status=2)
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"DCGAN.py: error: missing hyperparameter PACKING in {file}")
