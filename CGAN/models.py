"""Conditional GAN (Mirza & Osindero 2014) on the DCGAN convolutional stacks, with the DCGAN loss.

Both networks receive the class label. The generator concatenates a learned label embedding to
the latent vector. The discriminator gets the label as one-hot maps stacked on the image's
channels, so its first convolution gets the class at every position. Maps (rather than a
projection at the end) also keep each image with its own label under packing, because the
maps are stacked before the images of a pack are.
"""

import torch
import torch.nn.functional as F
from torch import nn

from common.networks import Discriminator, Generator, initialise_weights

EMBEDDING_SIZE = 50  # size of the learned label embedding appended to the latent vector


class ConditionalGenerator(nn.Module):
    """Map a latent vector and a class label to an image in [-1, 1]."""

    def __init__(self, latent_size: int, label_count: int, image_channels: int, image_size: int, complexity: int, dropout_prob: float = 0.0):
        super().__init__()
        self.latent_size = latent_size
        self.label_embedding = nn.Embedding(label_count, EMBEDDING_SIZE)
        self.generator = Generator(latent_size + EMBEDDING_SIZE, image_channels, image_size, complexity, dropout_prob)

    def forward(self, latent: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.generator(torch.cat([latent, self.label_embedding(labels)], dim=1))


class ConditionalDiscriminator(nn.Module):
    """Score images given their class labels: one raw score per pack of `packing` images."""

    def __init__(self, label_count: int, image_channels: int, image_size: int, complexity: int, packing: int = 1):
        super().__init__()
        self.label_count = label_count
        self.discriminator = Discriminator(image_channels + label_count, image_size, complexity, packing)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        count, _, height, width = images.shape
        # N -> N x label_count x height x width: plane k is all ones for the images of class k
        label_maps = F.one_hot(labels, self.label_count).to(images.dtype).view(count, -1, 1, 1).expand(-1, -1, height, width)
        return self.discriminator(torch.cat([images, label_maps], dim=1))


def build_networks(hyperparameters: dict, image_channels: int) -> tuple[ConditionalGenerator, ConditionalDiscriminator]:
    """Create the conditional networks for `image_channels`-channel images, initialised from N(WEIGHTS_MEAN, WEIGHTS_STD)."""
    size, width, labels = hyperparameters["IMAGE_SIZE"], hyperparameters["COMPLEXITY"], hyperparameters["NUMBER_LABELS"]
    generator = ConditionalGenerator(hyperparameters["LATENT_INPUT"], labels, image_channels, size, width, hyperparameters["DROPOUT_PROB"])
    discriminator = ConditionalDiscriminator(labels, image_channels, size, width, hyperparameters["PACKING"])
    for network in (generator, discriminator):
        initialise_weights(network, hyperparameters["WEIGHTS_MEAN"], hyperparameters["WEIGHTS_STD"])
    return generator, discriminator


def score_loss(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on logits, the GAN loss of Goodfellow et al. 2014 that Mirza & Osindero condition on labels."""
    return F.binary_cross_entropy_with_logits(scores, targets)
