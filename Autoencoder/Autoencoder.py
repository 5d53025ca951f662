"""Train a convolutional autoencoder on small images, or sample from a trained one.

Usage: python3 Autoencoder.py [NAME=VALUE ...], from this folder or from the repository root;
python3 Autoencoder.py --generate N writes N samples from the newest checkpoint.
Results land in results_<DATASET_NAME>/ beside this script.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for `common` and `data`

from common.cli import run_script  # noqa: E402


def build_model(hyperparameters: dict, image_channels: int):
    from models import Autoencoder

    return Autoencoder(image_channels, hyperparameters["IMAGE_SIZE"], hyperparameters["COMPLEXITY"], hyperparameters["CODE_SIZE"])


def train(hyperparameters: dict, hyperparameters_file: Path, results: Path, resume: bool) -> None:
    # Imported here so that --help and hyperparameter errors return without the seconds torch takes to load.
    from common.autoencoding import train_autoencoder

    # An autoencoder's codes follow no set prior, so samples decode codes from a Gaussian fitted to the training codes.
    train_autoencoder("Autoencoder", build_model, hyperparameters, hyperparameters_file, results, fit_code_distribution=True, resume=resume)


def sample(arguments, hyperparameters: dict, results: Path) -> None:
    from common.autoencoding import sample_autoencoder

    sample_autoencoder("Autoencoder", build_model, arguments, hyperparameters, results)


if __name__ == "__main__":
    run_script(__file__, "Train a convolutional autoencoder on small images, or sample from a trained one.", train, sample)
