"""Autoencoder and VAE networks and losses, the shared encoder and decoder, and the shared autoencoding loop."""

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence as torch_kl_divergence

from Autoencoder.models import Autoencoder, reconstruction_loss
from common.autoencoding import CodeDistribution, load_trained_model, to_unit_range, train_autoencoder
from common.checkpoints import load_checkpoint
from common.sampling import spherical_path
from common.coders import Decoder, Encoder
from common.config import load_hyperparameters
from common.data import load_images, to_signed_float
from common.errors import UserError
from common.networks import initialise_weights
from conftest import REPO_ROOT
from VAE.models import LOGVAR_RANGE, VAE, bernoulli_negative_log_likelihood, kl_divergence


@pytest.fixture(scope="module")
def test_images(mnist):
    """The first 32 MNIST test digits at 32 px, as floats in [0, 1]."""
    return to_unit_range(to_signed_float(load_images("MNIST", 32, None, train=False).images[:32]))


def test_kl_zero_at_prior():
    assert kl_divergence(torch.zeros(1, 2), torch.zeros(1, 2)).item() == 0.0


def test_kl_one_for_unit_mean_shift():
    assert kl_divergence(torch.ones(1, 2), torch.zeros(1, 2)).item() == pytest.approx(1.0)


def test_kl_matches_torch_distributions():
    mu = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.3, -0.7]])
    logvar = torch.tensor([[0.0, -2.0, 1.5], [3.0, 0.1, -0.4]])
    expected = torch_kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(1).mean()
    assert kl_divergence(mu, logvar).item() == pytest.approx(expected.item(), rel=1e-5)


def test_kl_averages_over_batch():
    mu = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    assert kl_divergence(mu, torch.zeros(2, 2)).item() == pytest.approx(0.5)


def test_bernoulli_likelihood_sums_pixels(test_images):
    logits = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    probabilities = torch.sigmoid(logits)
    images = test_images[:2]
    per_image = -(images * probabilities.log() + (1 - images) * (1 - probabilities).log()).sum((1, 2, 3))
    assert bernoulli_negative_log_likelihood(logits, images).item() == pytest.approx(per_image.mean().item(), rel=1e-4)


def test_losses_independent_of_batch_size(test_images):
    images = test_images[:4]
    logits = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    mu, logvar = torch.randn(4, 16), torch.randn(4, 16)
    repeated = (images.repeat(3, 1, 1, 1), logits.repeat(3, 1, 1, 1), mu.repeat(3, 1), logvar.repeat(3, 1))

    small, large = bernoulli_negative_log_likelihood(logits, images), bernoulli_negative_log_likelihood(repeated[1], repeated[0])
    assert large.item() == pytest.approx(small.item(), rel=1e-5)
    assert kl_divergence(repeated[2], repeated[3]).item() == pytest.approx(kl_divergence(mu, logvar).item(), rel=1e-5)
    reconstructions = torch.sigmoid(logits)
    assert reconstruction_loss(reconstructions.repeat(3, 1, 1, 1), repeated[0]).item() == pytest.approx(reconstruction_loss(reconstructions, images).item(), rel=1e-5)


def test_model_loss_same_for_split_batch(test_images):
    torch.manual_seed(0)
    model = Autoencoder(1, 32, 8, 16).eval()
    with torch.no_grad():
        whole = model.losses(test_images[:8])["loss"]
        halves = (model.losses(test_images[:4])["loss"] + model.losses(test_images[4:8])["loss"]) / 2
    assert whole.item() == pytest.approx(halves.item(), rel=1e-5)


@pytest.mark.parametrize(("model_class", "part", "ratio"), [(Autoencoder, "loss", 0.7), (VAE, "reconstruction", 0.85)])
def test_reconstruction_loss_drops(test_images, model_class, part, ratio):
    torch.manual_seed(0)
    model = model_class(1, 32, 8, 16)
    initialise_weights(model, 0.0, 0.05)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    values = []
    for _ in range(40):
        losses = model.losses(test_images)
        values.append(losses[part].item())
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
    assert values[-1] < ratio * values[0], values


@pytest.mark.parametrize("image_size", [32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes(image_size, channels):
    images = torch.rand(5, channels, image_size, image_size)
    assert Encoder(channels, image_size, 8, 12)(images).shape == (5, 12)
    assert Decoder(12, channels, image_size, 8)(torch.randn(5, 12)).shape == (5, channels, image_size, image_size)

    for model in (Autoencoder(channels, image_size, 8, 12), VAE(channels, image_size, 8, 12)):
        codes = model.encode(images)
        assert codes.shape == (5, 12)
        decoded = model.decode(codes)
        assert decoded.shape == (5, channels, image_size, image_size)
        assert decoded.min() >= 0
        assert decoded.max() <= 1
        assert all(value.shape == () and torch.isfinite(value) for value in model.losses(images).values())
    mu, logvar = VAE(channels, image_size, 8, 12).posterior(images)
    assert mu.shape == logvar.shape == (5, 12)


def test_64_px_adds_a_stage():
    def convolutions(network):
        return sum(isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) for module in network.modules())

    assert convolutions(Encoder(1, 64, 8, 4)) == convolutions(Encoder(1, 32, 8, 4)) + 1
    assert convolutions(Decoder(4, 1, 64, 8)) == convolutions(Decoder(4, 1, 32, 8)) + 1


def test_logvar_clamped_and_loss_finite(test_images):
    model = VAE(1, 32, 8, 4)
    last_layer = model.encoder.layers[-1]
    with torch.no_grad():
        last_layer.bias[4:] = 1e4  # logvar half of the output
        last_layer.bias[:4] = 0
    _, logvar = model.posterior(test_images[:2])
    assert logvar.max().item() == LOGVAR_RANGE[1]
    with torch.no_grad():
        last_layer.bias[4:] = -1e4
    _, logvar = model.posterior(test_images[:2])
    assert logvar.min().item() == LOGVAR_RANGE[0]
    assert all(torch.isfinite(value) for value in model.losses(test_images[:2]).values())


def test_fitted_distribution_matches_codes():
    generator = torch.Generator().manual_seed(0)
    covariance = torch.tensor([[4.0, 1.2, 0.0], [1.2, 1.0, 0.0], [0.0, 0.0, 0.25]])
    mean = torch.tensor([3.0, -1.0, 0.5])
    codes = mean + torch.randn(20000, 3, generator=generator) @ torch.linalg.cholesky(covariance).T
    fitted = CodeDistribution.fit(codes)
    assert torch.allclose(fitted.mean, mean, atol=0.05)
    assert torch.allclose(fitted.covariance, covariance, atol=0.1)

    samples = fitted.codes_from_noise(torch.randn(20000, 3, generator=generator))
    assert torch.allclose(samples.mean(0), mean, atol=0.05)
    assert torch.allclose(torch.cov(samples.T), covariance, atol=0.15)


def test_fit_survives_constant_dimension():
    codes = torch.randn(100, 3)
    codes[:, 1] = 7.0
    fitted = CodeDistribution.fit(codes)
    assert fitted.covariance[1, 1] > 0
    assert torch.isfinite(fitted.codes_from_noise(torch.randn(4, 3))).all()


def test_standard_distribution_is_identity():
    noise = torch.randn(6, 5)
    assert torch.equal(CodeDistribution.standard(5).codes_from_noise(noise), noise)


def test_spherical_path_ends_and_norms():
    start, end = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 5.0])
    path = spherical_path(start, end, 5)
    assert path.shape == (5, 2)
    assert torch.allclose(path[0], start)
    assert torch.allclose(path[-1], end, atol=1e-6)
    assert torch.allclose(path.norm(dim=1), torch.linspace(3, 5, 5))


class DivergingVAE(VAE):
    """A real VAE whose decoder weights turn NaN at one training iteration, as after a diverging update."""

    def __init__(self, *arguments, nan_at_call: int, **keywords):
        super().__init__(*arguments, **keywords)
        self.nan_at_call = nan_at_call
        self.training_calls = 0

    def losses(self, images):
        if self.training:
            self.training_calls += 1
            if self.training_calls == self.nan_at_call:
                with torch.no_grad():
                    self.decoder.layers[-1].weight.fill_(math.nan)
        return super().losses(images)


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_checkpoint(tmp_path, mnist):
    hyperparameters_file = REPO_ROOT / "VAE" / "hyperparameters.py"
    overrides = ["NB_EPOCH=3", "MAX_TRAIN_IMAGES=256", "MINIBATCH_SIZE=64", "COMPLEXITY=4", "NB_IMAGE_TO_GENERATE=2", "DEVICE=cpu", "METRICS_SAMPLES=0"]
    hyperparameters, _ = load_hyperparameters(hyperparameters_file, overrides)

    def build_model(values, image_channels):
        # 256 images in batches of 64 make 4 iterations per epoch: call 6 is epoch 2, iteration 2.
        return DivergingVAE(image_channels, values["IMAGE_SIZE"], values["COMPLEXITY"], values["CODE_SIZE"], nan_at_call=6)

    results = tmp_path / "results_MNIST"
    with pytest.raises(UserError) as raised:
        train_autoencoder("VAE", build_model, hyperparameters, hyperparameters_file, results, fit_code_distribution=False)
    assert str(raised.value) == (
        f"VAE: the train loss became nan at epoch 2, iteration 2; the last good checkpoint is {results / 'checkpoint.pt'}. "
        "Try a lower LEARNING_RATE"
    )

    checkpoint = load_checkpoint(results / "checkpoint.pt")
    assert checkpoint["epoch"] == 1
    assert all(torch.isfinite(tensor).all() for tensor in checkpoint["decoder"].values() if tensor.is_floating_point())
    assert (results / "decoded" / "epoch_1.png").exists()
    assert not (results / "decoded" / "epoch_2.png").exists()

    model, _, _ = load_trained_model(results / "checkpoint.pt", "VAE", build_model)
    assert torch.isfinite(model.decode(torch.zeros(1, 16))).all()
