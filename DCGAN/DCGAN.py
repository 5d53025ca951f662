"""Train a DCGAN (Radford et al. 2015) on small images, or sample from a trained one.

Usage: python3 DCGAN.py [NAME=VALUE ...], from this folder or from the repository root.
Results land in results_<DATASET_NAME>/ beside this script; --help lists the options.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for `common` and `data`

from common.cli import run_gan_script  # noqa: E402


def load_model():
    from common.adversarial import GANModel
    from models import build_networks, score_loss

    return GANModel("DCGAN", build_networks, score_loss)


if __name__ == "__main__":
    run_gan_script(__file__, "Train a DCGAN (Radford et al. 2015) on small images.", load_model)
