"""Autoencoder: a convolutional encoder to a code of `code_size` numbers and a decoder back to the image.

The networks live in common/coders.py because the VAE uses the same ones. What makes this model a
plain autoencoder is its deterministic code and the mean squared error below.
"""

import torch
import torch.nn.functional as F
from torch import nn

from common.coders import Decoder, Encoder


class Autoencoder(nn.Module):
    """Encoder and decoder for images in [0, 1]; the decoder ends in a sigmoid."""

    loss_names = ["loss"]  # the keys of losses(), in order

    def __init__(self, image_channels: int, image_size: int, complexity: int, code_size: int):
        super().__init__()
        self.code_size = code_size
        self.encoder = Encoder(image_channels, image_size, complexity, code_size)
        self.decoder = Decoder(code_size, image_channels, image_size, complexity)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(codes))

    def losses(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the training loss of a batch as {"loss": mean squared error}."""
        return {"loss": reconstruction_loss(self.decode(self.encode(images)), images)}


def reconstruction_loss(reconstructions: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Mean squared error per pixel, averaged over pixels, channels and images, on the [0, 1] scale.

    A mean over every element makes the number independent of the batch size and the image size,
    so it reads directly as the test MSE from which PSNR is computed.
    """
    return F.mse_loss(reconstructions, images)
