"""Quality metrics measured by real training runs and by --evaluate, on a slice of real MNIST."""

import csv
import shutil

import pytest

from common.classifier import classifier_path
from data.fetch import DATA_ROOT
from tests.conftest import run_script

QUICK_RUN = ["MAX_TRAIN_IMAGES=640", "COMPLEXITY=8", "NB_IMAGE_TO_GENERATE=4", "DEVICE=cpu", "METRICS_SAMPLES=500"]


@pytest.fixture(scope="module")
def installed_classifier(mnist_classifier):
    """Put the session's MNIST classifier where the scripts look for it, unless one is there, to save a second build."""
    destination = classifier_path("MNIST", DATA_ROOT / "classifiers")
    if not destination.exists():
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(classifier_path("MNIST", mnist_classifier.folder), destination)
    return destination


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
