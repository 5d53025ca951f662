"""Datasets as one uint8 tensor in memory, decoded and resized once and cached under data/cache/.

An epoch then only gathers shuffled rows of that tensor and scales them to [-1, 1] on the
training device, so no image is decoded or resized twice.
"""

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision import datasets

from common.errors import ConfigError, UserError
from common.images import RESIZE_POLICIES, parse_color
from data.fetch import DATA_ROOT, FetchError, ensure_dataset

CACHE_FORMAT = 1  # bump when the prepared tensors change, so old caches are rebuilt
LABELLED_DATASETS = {"MNIST": datasets.MNIST, "FASHIONMNIST": datasets.FashionMNIST}
NATIVE_CHANNELS = {"MNIST": 1, "FASHIONMNIST": 1, "POKEMON": 3, "PAINTINGS": 3, "FOLDER": 3}
# Datasets read from a folder of image files: data/POKEMON/, data/PAINTINGS/ or DATASET_PATH.
FOLDER_DATASETS = ("POKEMON", "PAINTINGS", "FOLDER")
# RESIZE_POLICY="auto": paintings and other folders are centre-cropped to a square so that the
# subject fills the frame, and sprites are padded so that no part of a creature is cut off.
AUTO_RESIZE_POLICY = {"POKEMON": "pad", "PAINTINGS": "crop", "FOLDER": "crop"}
PAINTINGS_HINT = (
    "place painting images there, directly or in one subfolder per class; "
    "README.md, section Datasets, lists sources of public-domain paintings"
)
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights, as Pillow's RGB to L conversion


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8, N x C x S x S
    labels: torch.Tensor  # int64, N
    class_names: list[str]


def load_dataset(hyperparameters: dict, train: bool = True, root: Path = DATA_ROOT) -> ImageSet:
    """Return the training (or test) split of the dataset that the hyperparameters describe.

    A hyperparameters file without DATASET_PATH, RESIZE_POLICY or BACKGROUND_COLOR gets their defaults.
    """
    return load_images(
        hyperparameters["DATASET_NAME"],
        hyperparameters["IMAGE_SIZE"],
        hyperparameters["IMAGE_CHANNELS"],
        train,
        root,
        folder=hyperparameters.get("DATASET_PATH"),
        resize_policy=hyperparameters.get("RESIZE_POLICY", "auto"),
        background_color=hyperparameters.get("BACKGROUND_COLOR", "white"),
    )


def load_images(
    name: str,
    image_size: int,
    channels: int | None,
    train: bool = True,
    root: Path = DATA_ROOT,
    *,
    folder: str | Path | None = None,
    resize_policy: str = "auto",
    background_color: str | tuple = "white",
) -> ImageSet:
    """Return the training (or test) split of dataset `name` at `image_size` px and `channels` channels.

    `folder` is the image folder of the FOLDER dataset. `resize_policy` ("auto", "crop" or "pad") and
    `background_color`, onto which transparent pixels are composited, apply to folder datasets only.
    """
    if name in FOLDER_DATASETS:
        return load_folder_dataset(name, image_size, channels or NATIVE_CHANNELS[name], train, Path(root), folder, resize_policy, background_color)
    if name not in LABELLED_DATASETS:
        raise ConfigError(f"invalid hyperparameter DATASET_NAME={name!r}: expected one of {', '.join([*LABELLED_DATASETS, *FOLDER_DATASETS])}")
    channels = channels or NATIVE_CHANNELS[name]
    split = "train" if train else "test"
    cache_path = Path(root) / "cache" / f"{name}_{split}_{image_size}px_{channels}ch.pt"

    cached = read_cache(cache_path, CACHE_FORMAT)
    if cached is not None:
        return ImageSet(cached["images"], cached["labels"], cached["class_names"])

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
    write_cache(cache_path, {"format": CACHE_FORMAT, "images": image_set.images, "labels": image_set.labels, "class_names": image_set.class_names})
    return image_set


def first_images(image_set: ImageSet, limit: int | None) -> ImageSet:
    """Return the first `limit` images of `image_set`, or all of them when `limit` is None."""
    if limit is None:
        return image_set
    return ImageSet(image_set.images[:limit], image_set.labels[:limit], image_set.class_names)


def load_training_set(hyperparameters: dict) -> ImageSet:
    """Load the training images at the requested size and channels, keeping the first MAX_TRAIN_IMAGES."""
    return first_images(load_dataset(hyperparameters, train=True), hyperparameters["MAX_TRAIN_IMAGES"])


def load_folder_dataset(name: str, image_size: int, channels: int, train: bool, root: Path, folder: str | Path | None, resize_policy: str, background_color: str | tuple) -> ImageSet:
    """Load POKEMON (fetched when its folder has no image), PAINTINGS or a FOLDER of the user's images."""
    from common.folders import load_folder_images, safe_name  # common.folders imports this module

    policy = AUTO_RESIZE_POLICY[name] if resize_policy == "auto" else resize_policy
    if policy not in RESIZE_POLICIES:
        raise ConfigError(f"invalid hyperparameter RESIZE_POLICY={resize_policy!r}: expected auto, {', '.join(RESIZE_POLICIES)}")
    try:
        background = parse_color(background_color)
    except ValueError as error:
        raise ConfigError(f"invalid hyperparameter BACKGROUND_COLOR={background_color!r}: {error}") from None

    if name == "POKEMON":
        from data.pokemon import ensure_pokemon

        try:
            image_folder = ensure_pokemon(root)
        except FetchError as error:
            raise UserError(str(error)) from None
        cache_name, hint = name, "empty the folder to fetch the sprites again, or place sprite images there"
    elif name == "PAINTINGS":
        image_folder, cache_name, hint = root / "PAINTINGS", name, PAINTINGS_HINT
    else:
        if folder is None:
            raise ConfigError("invalid hyperparameter DATASET_PATH=None: DATASET_NAME='FOLDER' needs the path of your image folder")
        image_folder = Path(folder).expanduser().resolve()
        path_hash = hashlib.sha256(str(image_folder).encode("utf-8", "surrogateescape")).hexdigest()[:8]
        cache_name = f"FOLDER-{safe_name(image_folder.name)}-{path_hash}"
        hint = "set DATASET_PATH to a folder of images"
    return load_folder_images(image_folder, cache_name, image_size, channels, train, policy, background, root / "cache", hint)


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


def read_cache(path: Path, cache_format: int) -> dict | None:
    """Return the content of a cache file, or None when it is missing, damaged or of another format."""
    if not path.exists():
        return None
    try:
        content = torch.load(path, weights_only=True)
    except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, whatever went wrong reading it
        return None
    if not isinstance(content, dict) or content.get("format") != cache_format:
        return None
    return content


def write_cache(path: Path, content: dict) -> None:
    """Save prepared tensors atomically; a cache that cannot be written only costs a rebuild next run."""
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
    A set smaller than one batch is served whole as a single batch. With `world_size` processes
    (under torchrun), every process draws the same shuffled order and takes shard `rank` of it,
    so the shards of an epoch never overlap; each process's batches hold `batch_size` images.
    """

    def __init__(self, image_set: ImageSet, batch_size: int, device: torch.device, seed: int, rank: int = 0, world_size: int = 1):
        count = len(image_set.images)
        if count < 2 * world_size:
            processes = f" for {world_size} processes" if world_size > 1 else ""
            raise UserError(f"the training set has {count} image(s); at least {2 * world_size} are needed{processes}")
        # The whole uint8 set lives on the device (61 MB for MNIST at 32 px), so batches never cross the bus.
        self.images = image_set.images.to(device)
        self.labels = image_set.labels.to(device)
        self.rank, self.world_size = rank, world_size
        self.shard_size = count // world_size
        self.batch_size = min(batch_size, self.shard_size)
        self.device = device
        self.shuffle_generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.shard_size // self.batch_size

    def epoch_indices(self) -> torch.Tensor:
        """Shuffle for the next epoch and return the indices of this process's shard, in order."""
        order = torch.randperm(len(self.images), generator=self.shuffle_generator)
        return order[self.rank * self.shard_size : (self.rank + 1) * self.shard_size]

    def __iter__(self):
        indices = self.epoch_indices().to(self.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            batch = indices[start : start + self.batch_size]
            yield to_signed_float(self.images[batch]), self.labels[batch]


def to_signed_float(images: torch.Tensor) -> torch.Tensor:
    """Map uint8 pixels 0..255 to floats in [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)
