"""DCGAN (Radford et al. 2015): the convolutional generator and discriminator, and the original GAN loss.

The two network classes live in common/networks.py because LSGAN and CGAN build on the same
stacks. What makes this model DCGAN is the loss below.
"""

import torch
import torch.nn.functional as F

from common.networks import Discriminator, Generator, build_networks

__all__ = ["Discriminator", "Generator", "build_networks", "score_loss"]


def score_loss(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy between the discriminator's logits and targets in [0, 1] (Goodfellow et al. 2014).

    The discriminator minimises BCE(D(x), 1) + BCE(D(G(z)), 0). The generator minimises
    BCE(D(G(z)), 1), the non-saturating loss that keeps its gradients large early in training.
    Computing it on logits avoids the overflow of a sigmoid followed by a log.
    """
    return F.binary_cross_entropy_with_logits(scores, targets)
