"""Convolutional generator and discriminator of DCGAN (Radford et al. 2015), shared by the GANs.

Both networks scale by a width `complexity`: the layer at the highest hidden resolution has
`complexity` feature maps and each halving of the resolution doubles them. A 32 px network has
three stride-2 stages below the 4x4 base, a 64 px one a fourth.
"""

import torch
from torch import nn

BASE_SIZE = 4  # spatial size of the generator's first feature map and the discriminator's last


def stage_count(image_size: int) -> int:
    """Return the number of stride-2 stages between the 4x4 base and `image_size` (3 at 32 px, 4 at 64 px)."""
    stages = (image_size // BASE_SIZE).bit_length() - 1
    if BASE_SIZE << stages != image_size or stages < 1:
        raise ValueError(f"image_size must be 4 times a power of two and at least 8, got {image_size}")
    return stages


class Generator(nn.Module):
    """Map a latent vector to an image in [-1, 1]: transposed convolutions, batch norm, ReLU, tanh."""

    def __init__(self, latent_size: int, image_channels: int, image_size: int, complexity: int, dropout_prob: float = 0.0):
        super().__init__()
        self.latent_size = latent_size
        stages = stage_count(image_size)
        widths = [complexity * 2 ** power for power in range(stages - 1, -1, -1)]  # e.g. 4C, 2C, C at 32 px

        # latent_size x 1 x 1 -> widths[0] x 4 x 4
        layers = [*self._block(nn.ConvTranspose2d(latent_size, widths[0], BASE_SIZE, 1, 0, bias=False), widths[0], dropout_prob)]
        # each block doubles the size and halves the width: -> C x (image_size / 2) x (image_size / 2)
        for width_in, width_out in zip(widths, widths[1:]):
            layers += self._block(nn.ConvTranspose2d(width_in, width_out, 4, 2, 1, bias=False), width_out, dropout_prob)
        # C x (image_size / 2) x (image_size / 2) -> image_channels x image_size x image_size
        layers += [nn.ConvTranspose2d(widths[-1], image_channels, 4, 2, 1), nn.Tanh()]
        self.layers = nn.Sequential(*layers)

    @staticmethod
    def _block(convolution: nn.Module, width: int, dropout_prob: float) -> list[nn.Module]:
        block = [convolution, nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        if dropout_prob > 0:
            block.append(nn.Dropout(dropout_prob))
        return block

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        # .float() returns fp32 images under bf16 autocast too, so that losses and grids see fp32 (a no-op in fp32)
        return self.layers(latent.view(latent.shape[0], -1, 1, 1)).float()


class Discriminator(nn.Module):
    """Map a batch of images to raw scores (logits, no sigmoid), one per pack of `packing` images.

    Strided convolutions with LeakyReLU(0.2), and batch norm from the second layer on. With
    packing (PacGAN, Lin et al. 2018), groups of `packing` images enter as one input, their
    channels stacked, so the network judges samples together and can spot a lack of variety.
    """

    def __init__(self, image_channels: int, image_size: int, complexity: int, packing: int = 1):
        super().__init__()
        self.packing = packing
        stages = stage_count(image_size)
        widths = [complexity * 2 ** power for power in range(stages)]  # e.g. C, 2C, 4C at 32 px

        # (packing x image_channels) x image_size x image_size -> C x (image_size / 2) x (image_size / 2), no batch norm
        layers = [nn.Conv2d(image_channels * packing, widths[0], 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        # each block halves the size and doubles the width: -> widths[-1] x 4 x 4
        for width_in, width_out in zip(widths, widths[1:]):
            layers += [nn.Conv2d(width_in, width_out, 4, 2, 1, bias=False), nn.BatchNorm2d(width_out), nn.LeakyReLU(0.2, inplace=True)]
        # widths[-1] x 4 x 4 -> 1 x 1 x 1
        layers.append(nn.Conv2d(widths[-1], 1, BASE_SIZE, 1, 0))
        self.layers = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # .float() returns fp32 scores under bf16 autocast too, so that the losses are computed in fp32
        return self.layers(pack(images, self.packing)).view(-1).float()


def pack(images: torch.Tensor, packing: int) -> torch.Tensor:
    """Stack groups of `packing` consecutive images on the channel axis (PacGAN, Lin et al. 2018).

    A batch of N images of C channels becomes N // packing inputs of packing x C channels. The
    N % packing images left over are dropped, so any batch size and channel count works.
    """
    if packing == 1:
        return images
    count, channels, height, width = images.shape
    groups = count // packing
    if groups == 0:
        raise ValueError(f"a batch of {count} images cannot fill one pack of {packing}")
    return images[: groups * packing].reshape(groups, packing * channels, height, width)


def initialise_weights(network: nn.Module, mean: float, std: float) -> None:
    """Draw every convolution weight from N(mean, std) and every batch-norm scale from N(1, std).

    Biases start at zero. Batch-norm scales are centred on 1 so each layer starts close to the
    identity, as in Radford et al. 2015, who used mean 0 and std 0.02.
    """
    for module in network.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(module.weight, mean, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, std)
            nn.init.zeros_(module.bias)


def build_networks(hyperparameters: dict, image_channels: int) -> tuple[Generator, Discriminator]:
    """Create the DCGAN generator and discriminator for `image_channels`-channel images, initialised from N(WEIGHTS_MEAN, WEIGHTS_STD)."""
    size, width = hyperparameters["IMAGE_SIZE"], hyperparameters["COMPLEXITY"]
    generator = Generator(hyperparameters["LATENT_INPUT"], image_channels, size, width, hyperparameters["DROPOUT_PROB"])
    discriminator = Discriminator(image_channels, size, width, hyperparameters["PACKING"])
    for network in (generator, discriminator):
        initialise_weights(network, hyperparameters["WEIGHTS_MEAN"], hyperparameters["WEIGHTS_STD"])
    return generator, discriminator
