"""Convolutional encoder and decoder shared by the autoencoder and the VAE.

They follow the DCGAN discriminator and generator (Radford et al. 2015). The encoder halves the
resolution with strided convolutions down to a 4x4 map, and a last 4x4 convolution turns that map
into a vector. The decoder mirrors it with transposed convolutions. The layer at the highest
hidden resolution has `complexity` feature maps and each halving of the resolution doubles them.
Every hidden layer has batch norm except the encoder's first, as in DCGAN.
"""

import torch
from torch import nn

from common.networks import BASE_SIZE, stage_count


def feature_widths(image_size: int, complexity: int) -> list[int]:
    """Return the feature maps after each encoder stage, e.g. [C, 2C, 4C] at 32 px."""
    return [complexity * 2**power for power in range(stage_count(image_size))]


class Encoder(nn.Module):
    """Map images to vectors of `output_size` numbers: strided convolutions with LeakyReLU(0.2), no output activation."""

    def __init__(self, image_channels: int, image_size: int, complexity: int, output_size: int):
        super().__init__()
        widths = feature_widths(image_size, complexity)

        # image_channels x S x S -> C x S/2 x S/2, no batch norm
        layers = [nn.Conv2d(image_channels, widths[0], 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        # each block halves the size and doubles the width: -> widths[-1] x 4 x 4
        for width_in, width_out in zip(widths, widths[1:]):
            layers += [nn.Conv2d(width_in, width_out, 4, 2, 1, bias=False), nn.BatchNorm2d(width_out), nn.LeakyReLU(0.2, inplace=True)]
        # widths[-1] x 4 x 4 -> output_size x 1 x 1, a linear map of the whole 4x4 map
        layers.append(nn.Conv2d(widths[-1], output_size, BASE_SIZE, 1, 0))
        self.layers = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # .float() returns fp32 codes under bf16 autocast too, so that the KL term and the sampling run in fp32
        return self.layers(images).flatten(1).float()


class Decoder(nn.Module):
    """Map codes of `code_size` numbers to image logits: transposed convolutions with batch norm and ReLU.

    The output has no sigmoid, so a Bernoulli likelihood can be computed from the logits without
    the overflow of a sigmoid followed by a log. torch.sigmoid of the output gives pixels in [0, 1].
    """

    def __init__(self, code_size: int, image_channels: int, image_size: int, complexity: int):
        super().__init__()
        widths = feature_widths(image_size, complexity)[::-1]  # e.g. 4C, 2C, C at 32 px

        # code_size x 1 x 1 -> widths[0] x 4 x 4
        layers = [nn.ConvTranspose2d(code_size, widths[0], BASE_SIZE, 1, 0, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)]
        # each block doubles the size and halves the width: -> C x S/2 x S/2
        for width_in, width_out in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(width_in, width_out, 4, 2, 1, bias=False), nn.BatchNorm2d(width_out), nn.ReLU(inplace=True)]
        # C x S/2 x S/2 -> image_channels x S x S
        layers.append(nn.ConvTranspose2d(widths[-1], image_channels, 4, 2, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        # .float() returns fp32 logits under bf16 autocast too, so that the losses are computed in fp32
        return self.layers(codes.view(codes.shape[0], -1, 1, 1)).float()
