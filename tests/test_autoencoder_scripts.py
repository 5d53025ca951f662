"""Autoencoder.py and VAE.py run for real, as subprocesses, on a slice of real MNIST."""

import csv
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from Autoencoder.models import Autoencoder
from conftest import REPO_ROOT
from VAE.models import VAE

QUICK_RUN = ["NB_EPOCH=2", "MAX_TRAIN_IMAGES=512", "MAX_TEST_IMAGES=500", "MINIBATCH_SIZE=16", "COMPLEXITY=8", "NB_IMAGE_TO_GENERATE=4", "DEVICE=cpu", "METRICS_SAMPLES=0"]
GRID_SIDE = 4 * 34 + 2  # 4 images of 32 px with 2 px padding around each
MODELS = {"Autoencoder": Autoencoder, "VAE": VAE}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist):
    """A copy of both model folders beside links to common/ and data/, each trained for 2 epochs by its script."""
    root = tmp_path_factory.mktemp("repository")
    for name in MODELS:
        shutil.copytree(REPO_ROOT / name, root / name, ignore=shutil.ignore_patterns("results_*", "__pycache__"))
    (root / "common").symlink_to(REPO_ROOT / "common")
    (root / "data").symlink_to(mnist)
    for name in MODELS:
        run([f"{name}.py", *QUICK_RUN], cwd=root / name)
    return root


def run(arguments, cwd, expected_status=0):
    result = subprocess.run([sys.executable, *arguments], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == expected_status, result.stderr[-3000:]
    return result


def assert_not_constant(path):
    pixels = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    assert pixels.std() > 5, f"{path} is a constant image"


def read_metrics(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_two_epochs_write_every_output(trained, name):
    results = trained / name / "results_MNIST"
    for epoch in (1, 2):
        for folder in ("encoded", "decoded", "saved_generated"):
            grid = results / folder / f"epoch_{epoch}.png"
            assert Image.open(grid).size == (GRID_SIDE, GRID_SIDE), grid
            assert_not_constant(grid)
    encoded = np.asarray(Image.open(results / "encoded" / "epoch_2.png"), dtype=np.float32)
    decoded = np.asarray(Image.open(results / "decoded" / "epoch_2.png"), dtype=np.float32)
    assert np.abs(encoded - decoded).mean() > 1  # reconstructions, not a copy of the inputs
    assert_not_constant(results / "losses.png")
    assert Image.open(results / "progress.gif").n_frames == 2
    assert Image.open(results / "interpolation.png").size == (12 * 34 + 2, GRID_SIDE)  # 4 pairs, 10 steps between them

    saved = (results / "hyperparameters.py").read_text()
    assert "NB_EPOCH = 2  #" in saved
    assert "MAX_TRAIN_IMAGES = 512  #" in saved


@pytest.mark.slow
def test_autoencoder_metrics(trained):
    rows = read_metrics(trained / "Autoencoder" / "results_MNIST" / "metrics.csv")
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert list(rows[0]) == ["epoch", "train_loss", "test_loss", "test_mse", "test_psnr", "seconds", "images_per_second"]
    for row in rows:
        assert float(row["test_loss"]) == pytest.approx(float(row["test_mse"]))
        assert float(row["test_psnr"]) == pytest.approx(-10 * math.log10(float(row["test_mse"])), abs=1e-3)
    assert float(rows[1]["test_mse"]) < float(rows[0]["test_mse"])


@pytest.mark.slow
def test_vae_metrics(trained):
    rows = read_metrics(trained / "VAE" / "results_MNIST" / "metrics.csv")
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert set(rows[0]) == {
        "epoch", "train_loss", "test_loss", "train_reconstruction", "test_reconstruction", "train_kl", "test_kl",
        "train_negative_elbo", "test_negative_elbo", "test_mse", "test_psnr", "seconds", "images_per_second",
    }
    for row in rows:
        parts = float(row["test_reconstruction"]) + float(row["test_kl"])
        assert float(row["test_negative_elbo"]) == pytest.approx(parts, rel=1e-5)
        assert float(row["test_loss"]) == pytest.approx(parts, rel=1e-5)  # KL_WEIGHT = 1
        assert 0 < float(row["test_kl"])
    # A network that learned nothing outputs 0.5 everywhere: 1024 x ln 2 = 710 nats per 32 px image.
    assert float(rows[1]["test_negative_elbo"]) < 600
    assert float(rows[1]["test_negative_elbo"]) < float(rows[0]["test_negative_elbo"])


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_checkpoint_and_networks_load(trained, name):
    results = trained / name / "results_MNIST"
    checkpoint = torch.load(results / "checkpoint.pt", weights_only=True)
    assert checkpoint["model"] == name
    assert checkpoint["epoch"] == 2
    assert checkpoint["hyperparameters"]["COMPLEXITY"] == 8
    assert checkpoint["image_channels"] == 1
    assert checkpoint["fixed_noise"].shape == (16, 16)
    assert set(checkpoint["history"]["epoch"]) >= {"train loss", "test loss"}
    assert len(checkpoint["history"]["epoch"]["test loss"]) == 2
    assert "state" in checkpoint["optimizer"]

    model = MODELS[name](1, 32, 8, 16)
    model.encoder.load_state_dict(torch.load(results / "encoder_end.pt", weights_only=True))
    model.decoder.load_state_dict(torch.load(results / "decoder_end.pt", weights_only=True))
    assert torch.equal(model.decoder.state_dict()["layers.0.weight"], checkpoint["decoder"]["layers.0.weight"])

    covariance = checkpoint["code_covariance"]
    assert covariance.shape == (16, 16)
    if name == "VAE":
        assert torch.equal(covariance, torch.eye(16))
        assert torch.equal(checkpoint["code_mean"], torch.zeros(16))
    else:
        assert not torch.allclose(covariance, torch.eye(16), atol=1e-2)  # fitted to the codes, not the prior


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_generate_from_checkpoint_repeatable(trained, name):
    folder = trained / name
    result = run([f"{name}.py", "--generate", "5", "--seed", "7"], cwd=folder)
    assert "pass --seed 7 to repeat" in result.stdout
    generated = folder / "results_MNIST" / "generated"
    assert sorted(path.name for path in generated.iterdir()) == ["grid.png", *(f"sample_{index:03d}.png" for index in range(1, 6))]
    single = Image.open(generated / "sample_001.png")
    assert single.size == (32, 32)
    assert single.mode == "L"
    assert_not_constant(generated / "grid.png")

    run([f"{name}.py", "--generate", "5", "--seed", "7"], cwd=folder)
    earlier = [path for path in (folder / "results_MNIST").iterdir() if path.name.startswith("generated_")]
    assert len(earlier) == 1
    for image in ("grid.png", "sample_005.png"):
        assert (generated / image).read_bytes() == (earlier[0] / image).read_bytes()


@pytest.mark.slow
def test_vae_interpolates(trained):
    run(["VAE.py", "--interpolate", "--seed", "1", "--checkpoint", "results_MNIST/checkpoint.pt"], cwd=trained / "VAE")
    strip = trained / "VAE" / "results_MNIST" / "generated" / "interpolation.png"
    assert Image.open(strip).size == (10 * 34 + 2, 36)
    assert_not_constant(strip)


@pytest.mark.slow
def test_checkpoint_of_other_model_rejected(trained):
    other = trained / "Autoencoder" / "results_MNIST" / "checkpoint.pt"
    result = run(["VAE.py", "--generate", "2", "--checkpoint", str(other)], cwd=trained / "VAE", expected_status=1)
    assert result.stderr == f"VAE.py: error: {other} was written by Autoencoder.py, not VAE.py; pass a VAE checkpoint with --checkpoint\n"


@pytest.mark.slow
def test_checkpoint_of_other_size_rejected(trained):
    result = run(["Autoencoder.py", "--generate", "2", "IMAGE_SIZE=64"], cwd=trained / "Autoencoder", expected_status=2)
    assert result.stderr.count("\n") == 1
    assert "was trained with IMAGE_SIZE=32, not the requested IMAGE_SIZE=64" in result.stderr


@pytest.mark.slow
def test_diverging_run_stops_with_one_line(trained):
    arguments = ["NB_EPOCH=1", "MAX_TRAIN_IMAGES=128", "COMPLEXITY=4", "DEVICE=cpu", "LEARNING_RATE=1e30", "METRICS_SAMPLES=0"]
    result = run(["VAE.py", *arguments], cwd=trained / "VAE", expected_status=1)
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("VAE.py: error: VAE: the train loss became ")
    assert "at epoch 1, iteration " in result.stderr
    assert "no checkpoint was saved yet. Try a lower LEARNING_RATE" in result.stderr


@pytest.mark.parametrize(
    ("name", "argument", "expected"),
    [
        ("VAE", "KL_WEIGHT=-1", "VAE.py: error: invalid hyperparameter KL_WEIGHT=-1: expected a number of at least 0"),
        ("VAE", "CODE_SIZE=0", "VAE.py: error: invalid hyperparameter CODE_SIZE=0: expected a positive integer"),
        ("Autoencoder", "IMAGE_SIZE=28", "Autoencoder.py: error: invalid hyperparameter IMAGE_SIZE=28: expected 32 or 64"),
        ("Autoencoder", "KL_WEIGHT=1", "Autoencoder.py: error: unknown hyperparameter 'KL_WEIGHT'"),
    ],
)
def test_bad_hyperparameter_exits_2(name, argument, expected):
    result = subprocess.run([sys.executable, f"{name}/{name}.py", argument], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(expected)


@pytest.mark.parametrize("name", MODELS)
def test_help_lists_hyperparameters(name):
    result = subprocess.run([sys.executable, f"{name}/{name}.py", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for hyperparameter in ("DATASET_NAME", "CODE_SIZE", "COMPLEXITY", "WEIGHTS_STD", "LEARNING_RATE", "NB_IMAGE_TO_GENERATE"):
        assert f"  {hyperparameter} = " in result.stdout
    assert ("KL_WEIGHT = 1.0" in result.stdout) == (name == "VAE")
    assert "--generate N" in result.stdout
