"""Feature networks that map images in [-1, 1] to vectors for the sample-quality metrics.

- MNIST and Fashion-MNIST: the penultimate layer of the project's own classifier (common/classifier.py).
- Unlabelled datasets: a fixed, seeded, randomly initialised convolutional network. Its distances
  are comparable between runs of this project on the same dataset, size and channel count, and
  with nothing else.
- Optionally torchvision's Inception-v3, when its ImageNet weights are already on disk.
"""

from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import Inception_V3_Weights, inception_v3

from common.classifier import TrainedClassifier
from common.runtime import seeded_random_state

FEATURE_BATCH_SIZE = 500  # images per forward pass
RANDOM_FEATURES_SEED = 0
RANDOM_FEATURES_WIDTHS = (32, 64, 64)
# The last feature map is averaged down to 2 x 2, so 64 x 4 = 256 features: few enough for a covariance
# estimated from a few thousand images, and for KID to take seconds rather than tens of seconds on a CPU.
RANDOM_FEATURES_POOLED_SIZE = 2
INCEPTION_IMAGE_SIZE = 299


class RandomFeatures(nn.Module):
    """A fixed, randomly initialised convolutional network: the feature space for unlabelled datasets.

    Three 3x3 convolutions of stride 2 with LeakyReLU(0.2), weights drawn with Kaiming's normal
    initialisation (He et al. 2015) under `seed`, then an average pool of the last map to
    `pooled_size` x `pooled_size`. Any image size of at least 8 px gives the same feature count.
    """

    def __init__(self, image_channels: int, widths: tuple[int, ...] = RANDOM_FEATURES_WIDTHS, pooled_size: int = RANDOM_FEATURES_POOLED_SIZE, seed: int = RANDOM_FEATURES_SEED):
        super().__init__()
        self.pooled_size = pooled_size
        self.num_features = widths[-1] * pooled_size**2  # the name torchmetrics reads off a custom feature network
        with seeded_random_state(seed):
            layers = []
            for width_in, width_out in zip((image_channels, *widths), widths):
                # width_in x S x S -> width_out x S/2 x S/2
                convolution = nn.Conv2d(width_in, width_out, 3, stride=2, padding=1)
                nn.init.kaiming_normal_(convolution.weight, a=0.2, nonlinearity="leaky_relu")
                nn.init.zeros_(convolution.bias)
                layers += [convolution, nn.LeakyReLU(0.2)]
            self.layers = nn.Sequential(*layers)
        self.requires_grad_(False)
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.layers(images), self.pooled_size).flatten(1)


class InceptionFeatures(nn.Module):
    """torchvision's Inception-v3 up to its 2048 pooled activations, the feature space of the usual FID.

    Images in [-1, 1] are repeated to 3 channels and resized to 299 px with bilinear filtering.
    transform_input stays off because the ported Google weights expect inputs in [-1, 1],
    which is what the project's images already are.
    """

    def __init__(self, weights_path: Path):
        super().__init__()
        network = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=False)
        network.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
        network.fc = nn.Identity()
        self.network = network.requires_grad_(False).eval()
        self.num_features = 2048

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = images.float().expand(-1, 3, -1, -1)
        images = F.interpolate(images, size=(INCEPTION_IMAGE_SIZE, INCEPTION_IMAGE_SIZE), mode="bilinear", align_corners=False)
        return self.network(images)


def inception_weights_path() -> Path:
    """Return where torch.hub keeps torchvision's Inception-v3 ImageNet weights, downloaded or not."""
    file_name = Path(urlparse(Inception_V3_Weights.IMAGENET1K_V1.url).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def load_inception(device: torch.device) -> InceptionFeatures | None:
    """Return the Inception-v3 feature network on `device`, or None when its weights are not on disk. Never downloads them."""
    path = inception_weights_path()
    if not path.is_file():
        return None
    return InceptionFeatures(path).to(device)


def feature_network_for(image_channels: int, device: torch.device, classifier: TrainedClassifier | None) -> tuple[nn.Module, str]:
    """Return the feature network on `device` and a label that names it in printed output and plots.

    A dataset with a classifier (MNIST, Fashion-MNIST) gets its penultimate layer, any other the random network.
    """
    if classifier is not None:
        return classifier.feature_extractor.to(device).eval(), f"{classifier.dataset} classifier features"
    return RandomFeatures(image_channels).to(device), "random convolutional features, comparable only within this project"


@torch.no_grad()
def compute_features(network: nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Return the features of images in [-1, 1], computed in batches on `device`, as one float32 CPU tensor.

    uint8 images (0..255, as the datasets store them) are first scaled to [-1, 1].
    """
    parts = []
    for batch in images.split(FEATURE_BATCH_SIZE):
        batch = batch.to(device)
        if batch.dtype == torch.uint8:
            batch = batch.float().div_(127.5).sub_(1.0)
        parts.append(network(batch).float().cpu())
    return torch.cat(parts)
