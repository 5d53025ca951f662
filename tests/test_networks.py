"""DCGAN networks, packing, weight initialisation and the DCGAN loss."""

import math

import pytest
import torch
from torch import nn

from common.networks import Discriminator, Generator, initialise_weights, pack, stage_count
from DCGAN.models import score_loss


@pytest.mark.parametrize("image_size", [32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_output_shapes(image_size, channels):
    generator = Generator(latent_size=16, image_channels=channels, image_size=image_size, complexity=8)
    discriminator = Discriminator(image_channels=channels, image_size=image_size, complexity=8)
    images = generator(torch.randn(5, 16))
    assert images.shape == (5, channels, image_size, image_size)
    assert images.min() >= -1
    assert images.max() <= 1
    assert discriminator(images).shape == (5,)


def test_64_px_has_one_more_layer_pair():
    def convolutions(network):
        return sum(isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) for module in network.modules())

    assert stage_count(32) == 3
    assert stage_count(64) == 4
    assert convolutions(Generator(16, 1, 64, 8)) == convolutions(Generator(16, 1, 32, 8)) + 1
    assert convolutions(Discriminator(1, 64, 8)) == convolutions(Discriminator(1, 32, 8)) + 1


def test_widths_scale_with_complexity():
    small = sum(parameter.numel() for parameter in Generator(16, 1, 32, 8).parameters())
    large = sum(parameter.numel() for parameter in Generator(16, 1, 32, 16).parameters())
    assert large > 3 * small


def test_discriminator_batch_norm_from_second_layer():
    layers = list(Discriminator(1, 32, 8).layers)
    assert isinstance(layers[0], nn.Conv2d)
    assert isinstance(layers[1], nn.LeakyReLU)
    assert layers[1].negative_slope == 0.2
    assert isinstance(layers[3], nn.BatchNorm2d)


def test_generator_dropout_when_requested():
    assert not any(isinstance(module, nn.Dropout) for module in Generator(16, 1, 32, 8, dropout_prob=0.0).modules())
    dropouts = [module for module in Generator(16, 1, 32, 8, dropout_prob=0.3).modules() if isinstance(module, nn.Dropout)]
    assert len(dropouts) == 3
    assert all(module.p == 0.3 for module in dropouts)


@pytest.mark.parametrize(("count", "packing", "channels"), [(7, 3, 1), (5, 2, 1), (9, 4, 3), (6, 1, 1), (3, 3, 3)])
def test_pack_any_batch_and_channels(count, packing, channels):
    images = torch.randn(count, channels, 8, 8)
    packed = pack(images, packing)
    groups = count // packing
    assert packed.shape == (groups, packing * channels, 8, 8)
    for group in range(groups):
        for member in range(packing):
            sample = packed[group, member * channels : (member + 1) * channels]
            assert torch.equal(sample, images[group * packing + member])


def test_pack_batch_smaller_than_pack():
    with pytest.raises(ValueError, match="cannot fill one pack of 3"):
        pack(torch.randn(2, 1, 8, 8), 3)


def test_packed_discriminator_scores_each_pack():
    discriminator = Discriminator(image_channels=1, image_size=32, complexity=8, packing=3)
    assert discriminator.layers[0].in_channels == 3
    assert discriminator(torch.randn(7, 1, 32, 32)).shape == (2,)


def test_initialisation_sets_mean_and_std():
    torch.manual_seed(0)
    generator = Generator(64, 3, 64, 32)
    initialise_weights(generator, mean=0.5, std=0.1)
    weights = torch.cat([module.weight.flatten() for module in generator.modules() if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d))])
    assert weights.mean().item() == pytest.approx(0.5, abs=0.01)
    assert weights.std().item() == pytest.approx(0.1, rel=0.02)

    scales = torch.cat([module.weight for module in generator.modules() if isinstance(module, nn.BatchNorm2d)])
    assert scales.mean().item() == pytest.approx(1.0, abs=0.02)
    assert scales.std().item() == pytest.approx(0.1, rel=0.1)
    biases = [module.bias for module in generator.modules() if getattr(module, "bias", None) is not None]
    assert all(torch.count_nonzero(bias) == 0 for bias in biases)


def test_initialisation_replaces_default_weights():
    discriminator = Discriminator(1, 32, 8)
    before = [parameter.clone() for parameter in discriminator.parameters()]
    initialise_weights(discriminator, mean=0.0, std=0.02)
    changed = [not torch.equal(old, new) for old, new in zip(before, discriminator.parameters())]
    assert sum(changed) >= len(before) - 2  # the zero biases of batch norm stay zero


def test_dcgan_loss_is_binary_cross_entropy():
    scores = torch.tensor([2.0, -1.0, 0.0])
    targets = torch.tensor([1.0, 0.0, 0.8])
    probabilities = torch.sigmoid(scores)
    expected = -(targets * probabilities.log() + (1 - targets) * (1 - probabilities).log()).mean()
    assert score_loss(scores, targets).item() == pytest.approx(expected.item(), rel=1e-6)
    assert score_loss(torch.tensor([0.0]), torch.tensor([1.0])).item() == pytest.approx(math.log(2))


def test_dcgan_loss_stable_for_large_logits():
    loss = score_loss(torch.tensor([200.0, -200.0]), torch.tensor([0.0, 1.0]))
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(200.0)
