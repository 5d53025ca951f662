"""LSGAN (Mao et al. 2017): the DCGAN networks trained with least-squares losses.

The discriminator's output is a raw score with no sigmoid, as in DCGAN, so the networks are the
same; only the loss changes. Least squares penalise generated images by their distance from the
real target, even when they already fool the discriminator, which gives the generator gradients
where a saturated sigmoid would give none.
"""

import torch

from common.networks import Discriminator, Generator, build_networks

__all__ = ["Discriminator", "Generator", "build_networks", "score_loss"]


def score_loss(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Least-squares loss ½ E[(D(x) − target)²] of Mao et al. 2017 (equation 2), with a = 0, b = 1, c = 1.

    The discriminator minimises ½ E[(D(x) − 1)²] + ½ E[D(G(z))²] (targets b = 1 for real images,
    a = 0 for generated ones, or soft targets with label smoothing). The generator minimises
    ½ E[(D(G(z)) − 1)²], the target c = 1.
    """
    return 0.5 * (scores - targets).pow(2).mean()
