"""Preparing image tensors, the batch loader and the on-disk cache."""

import pytest
import torch

from common.data import BatchLoader, ImageSet, convert_channels, load_images, resize
from common.errors import UserError


def image_set(count, channels=1, size=8):
    images = torch.randint(0, 256, (count, channels, size, size), dtype=torch.uint8)
    return ImageSet(images, torch.arange(count), [str(index) for index in range(count)])


def test_resize_keeps_range_and_dtype():
    images = torch.zeros(3, 1, 28, 28, dtype=torch.uint8)
    images[:, :, 10:18, 10:18] = 255
    resized = resize(images, 32)
    assert resized.shape == (3, 1, 32, 32)
    assert resized.dtype == torch.uint8
    assert resized.max() == 255
    assert resized.min() == 0


def test_gray_to_rgb_copies_channel():
    gray = torch.randint(0, 256, (2, 1, 4, 4), dtype=torch.uint8)
    rgb = convert_channels(gray, 3)
    assert rgb.shape == (2, 3, 4, 4)
    for channel in range(3):
        assert torch.equal(rgb[:, channel], gray[:, 0])


def test_rgb_to_gray_uses_luma_weights():
    rgb = torch.zeros(1, 3, 1, 3, dtype=torch.uint8)
    rgb[0, 0, 0, 0] = 255  # pure red
    rgb[0, 1, 0, 1] = 255  # pure green
    rgb[0, :, 0, 2] = 200  # gray stays gray
    gray = convert_channels(rgb, 1)
    assert gray.shape == (1, 1, 1, 3)
    assert gray[0, 0, 0].tolist() == [76, 150, 200]


def test_loader_scales_to_signed_range():
    images = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 1, 4, 4).contiguous()
    loader = BatchLoader(ImageSet(images, torch.arange(2), ["a", "b"]), 2, torch.device("cpu"), seed=0)
    batch, labels = next(iter(loader))
    assert batch.dtype == torch.float32
    assert sorted(batch[:, 0, 0, 0].tolist()) == [-1.0, 1.0]
    assert sorted(labels.tolist()) == [0, 1]


def test_loader_drops_last_batch_of_one():
    loader = BatchLoader(image_set(129), 64, torch.device("cpu"), seed=0)
    sizes = [len(batch) for batch, _ in loader]
    assert sizes == [64, 64]


def test_loader_serves_small_set_whole():
    loader = BatchLoader(image_set(10), 64, torch.device("cpu"), seed=0)
    sizes = [len(batch) for batch, _ in loader]
    assert sizes == [10]


def test_loader_rejects_single_image():
    with pytest.raises(UserError, match="at least 2"):
        BatchLoader(image_set(1), 64, torch.device("cpu"), seed=0)


def test_loader_shuffles_each_epoch_repeatably():
    data = image_set(20)

    def epochs(seed):
        loader = BatchLoader(data, 5, torch.device("cpu"), seed=seed)
        return [torch.cat([labels for _, labels in loader]).tolist() for _ in range(2)]

    first, second = epochs(seed=1)
    assert sorted(first) == list(range(20))
    assert first != second
    assert epochs(seed=1) == [first, second]
    assert epochs(seed=2) != [first, second]


def test_mnist_prepared_and_cached(mnist, tmp_path):
    raw_folder = tmp_path / "MNIST"
    raw_folder.symlink_to(mnist / "MNIST")
    train = load_images("MNIST", 32, None, train=True, root=tmp_path)
    assert train.images.shape == (60000, 1, 32, 32)
    assert train.images.dtype == torch.uint8
    assert train.labels.shape == (60000,)
    assert train.class_names[0].startswith("0")
    cache = tmp_path / "cache" / "MNIST_train_32px_1ch.pt"
    assert cache.exists()

    cached = load_images("MNIST", 32, None, train=True, root=tmp_path)
    assert torch.equal(cached.images, train.images)
    assert torch.equal(cached.labels, train.labels)

    rgb = load_images("MNIST", 64, 3, train=False, root=tmp_path)
    assert rgb.images.shape == (10000, 3, 64, 64)
    assert (tmp_path / "cache" / "MNIST_test_64px_3ch.pt").exists()


def test_damaged_cache_is_rebuilt(mnist, tmp_path):
    (tmp_path / "MNIST").symlink_to(mnist / "MNIST")
    cache = tmp_path / "cache" / "MNIST_test_32px_1ch.pt"
    cache.parent.mkdir()
    cache.write_bytes(b"not a checkpoint")
    test = load_images("MNIST", 32, None, train=False, root=tmp_path)
    assert test.images.shape == (10000, 1, 32, 32)
    assert torch.load(cache, weights_only=True)["images"].shape == (10000, 1, 32, 32)
