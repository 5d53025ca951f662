"""LeNet-like classifiers of MNIST and Fashion-MNIST whose features measure the quality of samples.

The project trains each classifier itself, once, on the 32 px training split with a fixed seed,
checks its test accuracy against a bar and caches it in data/classifiers/<DATASET>_32px.pt.
Its penultimate activations are the feature space of the Fréchet distance, KID, precision and
recall of common/metrics.py, and its predictions score the conditional GAN's samples.
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from common.checkpoints import save_atomically
from common.data import LUMA_WEIGHTS, ImageSet, load_images, to_signed_float
from common.errors import UserError
from common.runtime import seeded_random_state
from data.fetch import DATA_ROOT

CLASSIFIER_FOLDER = DATA_ROOT / "classifiers"
CLASSIFIER_IMAGE_SIZE = 32
CLASSIFIER_FORMAT = 1  # bump when the network or its training changes, so cached classifiers are rebuilt
NETWORK_SIZES = {"image_channels": 1, "class_count": 10, "widths": (16, 32), "hidden_size": 128}
SEED = 0
BATCH_SIZE = 128
MAX_LEARNING_RATE = 0.01
FEATURE_BATCH_SIZE = 1000  # images per forward pass when computing features or predictions


@dataclass(frozen=True)
class Recipe:
    """How long a dataset's classifier trains and the test accuracy it must reach."""

    epochs: int
    accuracy_bar: float


# Epochs chosen by measurement on one thread of a busy 2-core machine: MNIST reached 99.38% test
# accuracy after 2 epochs (37 s) and Fashion-MNIST 90.90% after 3 (52 s). 2 epochs left
# Fashion-MNIST at 90.4% in a trial, too close to its bar.
RECIPES = {"MNIST": Recipe(epochs=2, accuracy_bar=0.99), "FASHIONMNIST": Recipe(epochs=3, accuracy_bar=0.90)}


class LeNet(nn.Module):
    """Two 5x5 convolutions with batch norm, ReLU and 2x2 max pooling, then two linear layers.

    The layout of LeNet-5 (LeCun et al. 1998), with ReLU, max pooling and batch norm in place of
    its sigmoids and subsampling, so that Adam trains it in a few epochs. Takes 32 px images.
    """

    def __init__(self, image_channels: int, class_count: int, widths: tuple[int, int], hidden_size: int):
        super().__init__()
        first, second = widths
        self.num_features = hidden_size  # the name torchmetrics reads off a custom feature network
        self.convolutions = nn.Sequential(
            # image_channels x 32 x 32 -> first x 28 x 28 -> first x 14 x 14
            nn.Conv2d(image_channels, first, 5, bias=False), nn.BatchNorm2d(first), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            # first x 14 x 14 -> second x 10 x 10 -> second x 5 x 5
            nn.Conv2d(first, second, 5, bias=False), nn.BatchNorm2d(second), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(second * 5 * 5, hidden_size), nn.ReLU(inplace=True))
        self.output = nn.Linear(hidden_size, class_count)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Return the penultimate activations, N x hidden_size."""
        return self.hidden(self.convolutions(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.output(self.features(images))


def prepare_images(images: torch.Tensor) -> torch.Tensor:
    """Turn images in [-1, 1] of 1 or 3 channels at 32 or 64 px into the classifier's 1 x 32 x 32 input.

    Colour becomes grey with the ITU-R BT.601 weights, as the datasets convert it, and 64 px
    images are shrunk with antialiased bilinear filtering, as the datasets resize digits.
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape N x 1 x H x W or N x 3 x H x W, got {tuple(images.shape)}")
    images = images.float()
    if images.shape[1] == 3:
        weights = torch.tensor(LUMA_WEIGHTS, device=images.device).view(1, 3, 1, 1)
        images = (images * weights).sum(1, keepdim=True)
    if images.shape[-2:] != (CLASSIFIER_IMAGE_SIZE, CLASSIFIER_IMAGE_SIZE):
        size = (CLASSIFIER_IMAGE_SIZE, CLASSIFIER_IMAGE_SIZE)
        images = F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)
    return images


class ClassifierFeatures(nn.Module):
    """The classifier's penultimate activations for images in [-1, 1] of any channel count and size it accepts."""

    def __init__(self, network: LeNet):
        super().__init__()
        self.network = network
        self.num_features = network.num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network.features(prepare_images(images))


@dataclass
class TrainedClassifier:
    """A dataset's classifier in evaluation mode, with the test accuracy it reached when it was built."""

    dataset: str
    network: LeNet
    test_accuracy: float
    class_names: list[str]

    @property
    def feature_extractor(self) -> ClassifierFeatures:
        return ClassifierFeatures(self.network)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Return the penultimate activations of images in [-1, 1], computed in batches on the network's device."""
        device = next(self.network.parameters()).device
        parts = [self.network.features(prepare_images(batch.to(device))) for batch in images.split(FEATURE_BATCH_SIZE)]
        return torch.cat(parts)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Return the predicted class index of each image in [-1, 1]."""
        device = next(self.network.parameters()).device
        parts = [self.network(prepare_images(batch.to(device))).argmax(1) for batch in images.split(FEATURE_BATCH_SIZE)]
        return torch.cat(parts)


def has_classifier(dataset: str) -> bool:
    """Return whether the project trains a classifier for `dataset` (MNIST and Fashion-MNIST)."""
    return dataset in RECIPES


def classifier_path(dataset: str, folder: Path = CLASSIFIER_FOLDER) -> Path:
    return Path(folder) / f"{dataset}_{CLASSIFIER_IMAGE_SIZE}px.pt"


def load_classifier(dataset: str, device: torch.device, folder: Path = CLASSIFIER_FOLDER, data_root: Path = DATA_ROOT) -> TrainedClassifier:
    """Return the classifier of `dataset` on `device`, building and caching it in `folder` on first use.

    A cached file that is missing, unreadable or of another format is rebuilt. Building reads
    the dataset from `data_root` and raises a UserError when the test accuracy misses the bar.
    """
    if not has_classifier(dataset):
        raise UserError(f"no classifier for DATASET_NAME={dataset!r}: the project trains one for {' and '.join(RECIPES)} only")
    path = classifier_path(dataset, folder)
    classifier = read_classifier(path, dataset)
    if classifier is None:
        classifier = build_classifier(dataset, data_root)
        content = {
            "format": CLASSIFIER_FORMAT,
            "dataset": dataset,
            "sizes": {**NETWORK_SIZES, "widths": list(NETWORK_SIZES["widths"])},
            "network": classifier.network.state_dict(),
            "test_accuracy": classifier.test_accuracy,
            "class_names": classifier.class_names,
        }
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            save_atomically(content, path)
        except (OSError, UserError) as error:
            print(f"warning: could not cache the {dataset} classifier, so the next run builds it again: {error}")
    classifier.network.to(device)
    return classifier


def read_classifier(path: Path, dataset: str) -> TrainedClassifier | None:
    """Load a cached classifier, or return None when the file is missing, damaged or of another format or size."""
    if not path.exists():
        return None
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
        if content["format"] != CLASSIFIER_FORMAT or content["dataset"] != dataset:
            raise ValueError("another format or dataset")
        sizes = {**content["sizes"], "widths": tuple(content["sizes"]["widths"])}
        if sizes != NETWORK_SIZES:
            raise ValueError("other network sizes")
        network = LeNet(**sizes)
        network.load_state_dict(content["network"])
        classifier = TrainedClassifier(dataset, network.eval(), float(content["test_accuracy"]), list(content["class_names"]))
    except Exception as error:  # noqa: BLE001 - whatever is wrong with a cache file, it is rebuilt
        print(f"the cached classifier {path} is damaged or outdated ({type(error).__name__}), so it is built again")
        return None
    return classifier


def build_classifier(dataset: str, data_root: Path = DATA_ROOT) -> TrainedClassifier:
    """Train the classifier of `dataset` on its 32 px training split and check its test accuracy.

    Training runs under its own fixed seed, and the global random state is restored afterwards,
    so a training run that builds the classifier on first use goes on with the same random numbers.
    """
    recipe = RECIPES[dataset]
    train_set = load_images(dataset, CLASSIFIER_IMAGE_SIZE, 1, train=True, root=data_root)
    test_set = load_images(dataset, CLASSIFIER_IMAGE_SIZE, 1, train=False, root=data_root)
    print(
        f"training the {dataset} classifier that measures sample quality, once: {recipe.epochs} epochs on "
        f"{len(train_set.images):,} images (one to three minutes on a 2-core CPU)"
    )
    started = time.perf_counter()
    with seeded_random_state(SEED):
        network = LeNet(**NETWORK_SIZES)
        train_network(network, train_set, recipe.epochs, dataset)
    network.eval()
    classifier = TrainedClassifier(dataset, network, 0.0, list(train_set.class_names))

    predictions = classifier.predict(to_signed_float(test_set.images))
    classifier.test_accuracy = (predictions == test_set.labels).float().mean().item()
    check_accuracy(dataset, classifier.test_accuracy)
    print(f"{dataset} classifier: {classifier.test_accuracy:.2%} test accuracy (bar {recipe.accuracy_bar:.1%}), built in {time.perf_counter() - started:.0f} s")
    return classifier


def check_accuracy(dataset: str, accuracy: float) -> None:
    """Raise a UserError when a freshly built classifier's test accuracy is below its dataset's bar."""
    bar = RECIPES[dataset].accuracy_bar
    if accuracy < bar:
        raise UserError(
            f"the {dataset} classifier reached {accuracy:.2%} test accuracy, below its bar of {bar:.1%}, "
            "so its features cannot measure samples and it was not cached; check that the dataset files are intact, then run again"
        )


def train_network(network: LeNet, train_set: ImageSet, epochs: int, dataset: str) -> None:
    """Train with Adam and a one-cycle learning rate (Smith & Topin 2017), on the CPU, with a progress bar."""
    steps_per_epoch = len(train_set.images) // BATCH_SIZE
    optimizer = torch.optim.Adam(network.parameters(), lr=MAX_LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=MAX_LEARNING_RATE, total_steps=epochs * steps_per_epoch)
    network.train()
    # disable=None hides the bar when stderr is no terminal (a log file, CI).
    progress = tqdm(total=epochs * steps_per_epoch, desc=f"{dataset} classifier", unit="batch", leave=False, dynamic_ncols=True, disable=None)
    for images, labels in shuffled_batches(train_set, epochs):
        loss = F.cross_entropy(network(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        progress.update()
        if progress.n % 50 == 0:
            progress.set_postfix_str(f"loss {loss.item():.3f}")
    progress.close()


def shuffled_batches(train_set: ImageSet, epochs: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield full batches of float images in [-1, 1] and their labels, reshuffled every epoch."""
    for _ in range(epochs):
        order = torch.randperm(len(train_set.images))
        for start in range(0, len(order) - BATCH_SIZE + 1, BATCH_SIZE):
            indices = order[start : start + BATCH_SIZE]
            yield to_signed_float(train_set.images[indices]), train_set.labels[indices]
