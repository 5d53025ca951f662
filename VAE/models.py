"""Variational autoencoder (Kingma & Welling 2013, "Auto-Encoding Variational Bayes").

The encoder outputs the mean `mu` and log-variance `logvar` of a diagonal Gaussian q(z|x). A code
z is drawn from it with the reparameterisation trick and decoded into the logits of independent
Bernoulli pixels p(x|z). Training minimises the negative evidence lower bound (ELBO), with the KL
term weighted by `kl_weight`: 1 gives the plain VAE, other values the beta-VAE of Higgins et al. 2017.
The networks live in common/coders.py because the plain autoencoder uses the same ones.
"""

import torch
import torch.nn.functional as F
from torch import nn

from common.coders import Decoder, Encoder

# exp(20) is about 5e8 and exp(-30) about 1e-13, far outside any useful variance. exp() of either
# stays finite in float32, so one bad batch cannot overflow the KL term or the sampling.
LOGVAR_RANGE = (-30.0, 20.0)


class VAE(nn.Module):
    """Encoder to q(z|x) = N(mu, diag(exp(logvar))) and decoder to Bernoulli pixel probabilities in [0, 1]."""

    loss_names = ["loss", "reconstruction", "KL", "negative ELBO"]  # the keys of losses(), in order

    def __init__(self, image_channels: int, image_size: int, complexity: int, code_size: int, kl_weight: float = 1.0):
        super().__init__()
        self.code_size = code_size
        self.kl_weight = kl_weight
        self.encoder = Encoder(image_channels, image_size, complexity, 2 * code_size)  # mu and logvar side by side
        self.decoder = Decoder(code_size, image_channels, image_size, complexity)

    def posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return `mu` and the clamped `logvar` of q(z|x), each batch x code_size."""
        mu, logvar = self.encoder(images).chunk(2, dim=1)
        return mu, logvar.clamp(*LOGVAR_RANGE)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Return the posterior mean, the deterministic code used for reconstructions and interpolations."""
        return self.posterior(images)[0]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(codes))

    def losses(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the training loss of a batch of images in [0, 1] and its parts, in nats per image."""
        mu, logvar = self.posterior(images)
        # Reparameterisation: z = mu + sigma * epsilon keeps the sample differentiable in mu and logvar.
        codes = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        reconstruction = bernoulli_negative_log_likelihood(self.decoder(codes), images)
        kl = kl_divergence(mu, logvar)
        return {
            "loss": reconstruction + self.kl_weight * kl,
            "reconstruction": reconstruction,
            "KL": kl,
            "negative ELBO": reconstruction + kl,
        }


def bernoulli_negative_log_likelihood(logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Return -log p(x|z) under independent Bernoulli pixels, summed over pixels and averaged over the batch, in nats.

    This is the binary cross-entropy between the pixel values in [0, 1] and the decoder's
    probabilities, the likelihood Kingma & Welling 2013 used for MNIST.
    NOTE: MNIST pixels are grey levels, not binary, so this is a cross-entropy rather than the
    log-density of a proper model of grey levels: comparable between runs of this script, not
    with the published bits-per-dimension of models on binarised MNIST.
    """
    return F.binary_cross_entropy_with_logits(logits, images, reduction="sum") / len(images)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Return KL(N(mu, diag(exp(logvar))) || N(0, I)), summed over latent dimensions and averaged over the batch, in nats.

    Closed form from Kingma & Welling 2013, appendix B: -1/2 * sum(1 + logvar - mu^2 - exp(logvar)).
    """
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / len(mu)
