"""Datasets as one uint8 tensor in memory, decoded and resized once and cached under data/cache/.

An epoch then only gathers shuffled rows of that tensor and scales them to [-1, 1] on the
training device, so no image is decoded or resized twice.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision import datasets

from common.errors import ConfigError, UserError
from data.fetch import DATA_ROOT, FetchError, ensure_dataset

CACHE_FORMAT = 1  # bump when the prepared tensors change, so old caches are rebuilt
LABELLED_DATASETS = {"MNIST": datasets.MNIST, "FASHIONMNIST": datasets.FashionMNIST}
NATIVE_CHANNELS = {"MNIST": 1, "FASHIONMNIST": 1}
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights, as Pillow's RGB to L conversion


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8, N x C x S x S
    labels: torch.Tensor  # int64, N
    class_names: list[str]


def load_images(name: str, image_size: int, channels: int | None, train: bool = True, root: Path = DATA_ROOT) -> ImageSet:
    """Return the training (or test) split of dataset `name` at `image_size` px and `channels` channels."""
    if name not in LABELLED_DATASETS:
        raise ConfigError(f"invalid hyperparameter DATASET_NAME={name!r}: image folders are not readable yet; use MNIST or FASHIONMNIST")
    channels = channels or NATIVE_CHANNELS[name]
    split = "train" if train else "test"
    cache_path = Path(root) / "cache" / f"{name}_{split}_{image_size}px_{channels}ch.pt"

    cached = _read_cache(cache_path)
    if cached is not None:
        return cached

    try:
        ensure_dataset(name, root)
    except FetchError as error:
        raise UserError(str(error)) from None
    dataset = LABELLED_DATASETS[name](root=str(root), train=train)
    images = dataset.data.unsqueeze(1)  # N x 28 x 28 -> N x 1 x 28 x 28
    image_set = ImageSet(
        images=convert_channels(resize(images, image_size), channels),
        labels=dataset.targets.to(torch.int64),
        class_names=list(dataset.classes),
    )
    _write_cache(cache_path, image_set)
    return image_set


def resize(images: torch.Tensor, size: int, chunk: int = 8192) -> torch.Tensor:
    """Resize a uint8 N x C x H x W batch to size x size with antialiased bilinear filtering."""
    if images.shape[-2:] == (size, size):
        return images
    resized = [
        F.interpolate(part.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        .round_()
        .clamp_(0, 255)
        .to(torch.uint8)
        for part in images.split(chunk)
    ]
    return torch.cat(resized)


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert a uint8 N x C x H x W batch between grayscale (1 channel) and RGB (3 channels)."""
    if images.shape[1] == channels:
        return images
    if channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    weights = torch.tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)
    return (images.float() * weights).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)


def _read_cache(path: Path) -> ImageSet | None:
    if not path.exists():
        return None
    try:
        content = torch.load(path, weights_only=True)
    except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, whatever went wrong reading it
        return None
    if content.get("format") != CACHE_FORMAT:
        return None
    return ImageSet(content["images"], content["labels"], content["class_names"])


def _write_cache(path: Path, image_set: ImageSet) -> None:
    """Save the prepared tensors; a cache that cannot be written only costs a rebuild next run."""
    content = {"format": CACHE_FORMAT, "images": image_set.images, "labels": image_set.labels, "class_names": image_set.class_names}
    temporary = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(content, temporary)
        os.replace(temporary, path)
    except OSError as error:
        print(f"warning: could not cache the prepared images at {path}: {error.strerror}")
        temporary.unlink(missing_ok=True)


class BatchLoader:
    """Yield shuffled batches of a uint8 image tensor as float tensors in [-1, 1] on `device`.

    The last incomplete batch of an epoch is dropped, so batch norm never gets a batch of one.
    A set smaller than one batch is served whole as a single batch.
    """

    def __init__(self, image_set: ImageSet, batch_size: int, device: torch.device, seed: int):
        count = len(image_set.images)
        if count < 2:
            raise UserError(f"the training set has {count} image(s); at least 2 are needed")
        # The whole uint8 set lives on the device (61 MB for MNIST at 32 px), so batches never cross the bus.
        self.images = image_set.images.to(device)
        self.labels = image_set.labels.to(device)
        self.batch_size = min(batch_size, count)
        self.device = device
        self.shuffle_generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.images) // self.batch_size

    def __iter__(self):
        order = torch.randperm(len(self.images), generator=self.shuffle_generator).to(self.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            indices = order[start : start + self.batch_size]
            yield to_signed_float(self.images[indices]), self.labels[indices]


def to_signed_float(images: torch.Tensor) -> torch.Tensor:
    """Map uint8 pixels 0..255 to floats in [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)
