"""Train a DCGAN (Radford et al. 2015) on small images.

Usage: python3 DCGAN.py [NAME=VALUE ...], from this folder or from the repository root.
Results land in results_<DATASET_NAME>/ beside this script.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for `common` and `data`

from common.cli import run_script  # noqa: E402


def train(hyperparameters: dict, hyperparameters_file: Path, results: Path) -> None:
    # Imported here so that --help and hyperparameter errors return without the seconds torch takes to load.
    from common.adversarial import train_gan
    from models import score_loss

    train_gan("DCGAN", score_loss, hyperparameters, hyperparameters_file, results)


if __name__ == "__main__":
    run_script(__file__, "Train a DCGAN (Radford et al. 2015) on small images.", train)
