"""DCGAN.py run for real, as a subprocess, on a slice of real MNIST."""

import csv
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from common.networks import Discriminator, Generator

QUICK_RUN = ["NB_EPOCH=2", "MAX_TRAIN_IMAGES=640", "COMPLEXITY=8", "NB_IMAGE_TO_GENERATE=4", "DEVICE=cpu", "METRICS_SAMPLES=0"]


def run(arguments, cwd):
    result = subprocess.run([sys.executable, *arguments], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def assert_not_constant(path):
    pixels = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    assert pixels.std() > 5, f"{path} is a constant image"


@pytest.mark.slow
def test_two_epochs_write_every_output(repository):
    run(["DCGAN.py", *QUICK_RUN], cwd=repository / "DCGAN")
    results = repository / "DCGAN" / "results_MNIST"

    for epoch in (1, 2):
        grid = results / f"gen_epoch_{epoch}.png"
        assert Image.open(grid).size == (4 * 34 + 2, 4 * 34 + 2)
        assert_not_constant(grid)
        assert_not_constant(results / "real" / f"epoch_{epoch}.png")
    assert_not_constant(results / "losses.png")

    with open(results / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert set(rows[0]) == {"epoch", "generator_loss", "discriminator_loss", "seconds", "images_per_second"}
    assert all(float(row["images_per_second"]) > 0 for row in rows)

    saved = (results / "hyperparameters.py").read_text()
    assert "NB_EPOCH = 2  # passes over the training set" in saved
    assert "MAX_TRAIN_IMAGES = 640  #" in saved

    checkpoint = torch.load(results / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 2
    assert checkpoint["hyperparameters"]["COMPLEXITY"] == 8
    assert set(checkpoint) >= {"generator", "discriminator", "generator_optimizer", "discriminator_optimizer"}

    generator = Generator(100, 1, 32, 8)
    generator.load_state_dict(torch.load(results / "generator_end.pt", weights_only=True))
    discriminator = Discriminator(1, 32, 8)
    discriminator.load_state_dict(torch.load(results / "discriminator_end.pt", weights_only=True))
    assert torch.equal(generator.state_dict()["layers.0.weight"], checkpoint["generator"]["layers.0.weight"])

    assert Image.open(results / "progress.gif").n_frames == 2


@pytest.mark.slow
def test_root_run_same_folder_and_moves_old(repository):
    run(["DCGAN.py", *QUICK_RUN, "NB_EPOCH=1"], cwd=repository / "DCGAN")
    run(["DCGAN/DCGAN.py", *QUICK_RUN, "NB_EPOCH=1", "PACKING=3", "MINIBATCH_SIZE=50", "SEED=None"], cwd=repository)

    results = repository / "DCGAN" / "results_MNIST"
    assert (results / "gen_epoch_1.png").exists()
    saved = (results / "hyperparameters.py").read_text()
    assert "PACKING = 3" in saved
    assert re.search(r"^SEED = \d+  #", saved, re.MULTILINE), "the drawn seed is not saved"
    assert not (repository / "results_MNIST").exists()

    earlier = [path for path in (repository / "DCGAN").iterdir() if path.name.startswith("results_MNIST_")]
    assert len(earlier) == 1
    assert "PACKING = 1" in (earlier[0] / "hyperparameters.py").read_text()


@pytest.mark.slow
def test_same_seed_same_grid_and_losses(repository):
    folder = repository / "DCGAN"
    grids, losses = [], []
    for _ in range(2):
        run(["DCGAN.py", *QUICK_RUN, "NB_EPOCH=1", "SEED=5"], cwd=folder)
        grids.append((folder / "results_MNIST" / "gen_epoch_1.png").read_bytes())
        with open(folder / "results_MNIST" / "metrics.csv", newline="") as file:
            row = next(csv.DictReader(file))
        losses.append((row["generator_loss"], row["discriminator_loss"]))
    assert grids[0] == grids[1]
    assert losses[0] == losses[1]
