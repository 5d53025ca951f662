"""Quality metrics measured by real training runs and by --evaluate, on a slice of real MNIST."""

import csv

import pytest
from PIL import Image

from tests.conftest import run_script

QUICK_RUN = ["MAX_TRAIN_IMAGES=640", "COMPLEXITY=8", "NB_IMAGE_TO_GENERATE=4", "DEVICE=cpu", "METRICS_SAMPLES=500"]


def read_rows(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.slow
def test_gan_run_writes_metrics_every_epoch(repository, installed_classifier):
    script = repository / "DCGAN" / "DCGAN.py"
    result = run_script(script, *QUICK_RUN, "NB_EPOCH=2", "METRICS_EVERY=1")
    results = script.parent / "results_MNIST"

    rows = read_rows(results / "metrics.csv")
    assert [row["epoch"] for row in rows] == ["1", "2"]
    for row in rows:
        assert float(row["frechet_distance"]) > 0
        assert 0 <= float(row["precision"]) <= 1
        assert 0 <= float(row["recall"]) <= 1
        assert float(row["generator_loss"]) > 0
    assert (results / "metrics.png").stat().st_size > 10_000
    assert result.stdout.count("metrics on MNIST classifier features") >= 2
    assert "Fréchet distance of real training images" in result.stdout


@pytest.mark.slow
def test_metrics_only_after_last_epoch_by_default(repository, installed_classifier):
    script = repository / "VAE" / "VAE.py"
    run_script(script, *QUICK_RUN, "NB_EPOCH=2", "MAX_TEST_IMAGES=500")
    rows = read_rows(script.parent / "results_MNIST" / "metrics.csv")
    assert rows[0]["frechet_distance"] == ""  # the column appears with the last epoch's row
    assert float(rows[1]["frechet_distance"]) > 0
    assert float(rows[1]["test_negative_elbo"]) > 0


@pytest.mark.slow
def test_evaluate_measures_checkpoint(repository, installed_classifier):
    script = repository / "CGAN" / "CGAN.py"
    run_script(script, *QUICK_RUN, "NB_EPOCH=1", "DATASET_NAME=MNIST", "METRICS_SAMPLES=0")
    result = run_script(script, "--evaluate", "DATASET_NAME=MNIST", "METRICS_SAMPLES=500")
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith(f"{script.parent / 'results_MNIST' / 'checkpoint.pt'}, epoch 1: metrics on MNIST classifier features")
    assert "class accuracy " in line
    assert not (script.parent / "results_MNIST" / "generated").exists()


def test_evaluate_without_samples_is_one_line(repository):
    script = repository / "DCGAN" / "DCGAN.py"
    run_script(script, *QUICK_RUN, "NB_EPOCH=1", "METRICS_SAMPLES=0", "MAX_TRAIN_IMAGES=128")
    result = run_script(script, "--evaluate", "METRICS_SAMPLES=0", expect_status=2)
    assert result.stderr == "DCGAN.py: error: --evaluate needs METRICS_SAMPLES above 0, such as METRICS_SAMPLES=10000\n"


def test_folder_too_small_to_measure_still_trains(isolated_repository, tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    for index in range(12):
        Image.new("RGB", (20, 20), (20 * index, 100, 200)).save(folder / f"{index}.png")
    script = isolated_repository / "DCGAN" / "DCGAN.py"
    result = run_script(script, "DATASET_NAME=FOLDER", f"DATASET_PATH={folder}", "NB_EPOCH=1", "COMPLEXITY=4", "NB_IMAGE_TO_GENERATE=2", "METRICS_SAMPLES=500")
    assert "warning: quality metrics skipped for this run: the FOLDER test split has " in result.stdout
    assert "or set METRICS_SAMPLES=0" in result.stdout
    assert (script.parent / "results_FOLDER" / "checkpoint.pt").exists()
