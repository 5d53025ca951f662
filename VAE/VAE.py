"""Train a variational autoencoder (Kingma & Welling 2013) on small images, or sample from a trained one.

Usage: python3 VAE.py [NAME=VALUE ...], from this folder or from the repository root;
python3 VAE.py --generate N writes N samples from the newest checkpoint.
Results land in results_<DATASET_NAME>/ beside this script.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for `common` and `data`

from common.cli import run_script  # noqa: E402


def build_model(hyperparameters: dict, image_channels: int):
    from models import VAE

    return VAE(image_channels, hyperparameters["IMAGE_SIZE"], hyperparameters["COMPLEXITY"], hyperparameters["CODE_SIZE"], hyperparameters["KL_WEIGHT"])


def train(hyperparameters: dict, hyperparameters_file: Path, results: Path, resume: bool) -> None:
    # Imported here so that --help and hyperparameter errors return without the seconds torch takes to load.
    from common.autoencoding import train_autoencoder

    # Samples decode codes drawn from the prior N(0, I).
    train_autoencoder("VAE", build_model, hyperparameters, hyperparameters_file, results, fit_code_distribution=False, resume=resume)


def sample(arguments, hyperparameters: dict, results: Path) -> None:
    from common.autoencoding import sample_autoencoder

    sample_autoencoder("VAE", build_model, arguments, hyperparameters, results)


if __name__ == "__main__":
    run_script(__file__, "Train a variational autoencoder (Kingma & Welling 2013) on small images, or sample from a trained one.", train, sample)
