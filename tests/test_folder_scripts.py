"""Model scripts run for real on folders of synthetic images: odd files, few images, classes, errors."""

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from common.data import load_images
from conftest import run_script

QUICK_RUN = ["NB_EPOCH=1", "COMPLEXITY=8", "NB_IMAGE_TO_GENERATE=4", "DEVICE=cpu", "METRICS_SAMPLES=0"]
COLOURS = [(220, 40, 40), (40, 160, 60), (50, 60, 210), (230, 200, 40)]


def blob(colour, size=(40, 30), background=(255, 255, 255, 0)):
    """Return an RGBA image: a coloured ellipse on a transparent background."""
    image = Image.new("RGBA", size, background)
    ImageDraw.Draw(image).ellipse((4, 4, size[0] - 5, size[1] - 5), fill=(*colour, 255))
    return image


def odd_folder(folder):
    """Write a folder with two classes, images of many modes and formats, hidden files and unreadable files."""
    for index in range(12):
        colour = COLOURS[index % len(COLOURS)]
        cats, dogs = folder / "cats", folder / "dogs"
        cats.mkdir(parents=True, exist_ok=True)
        dogs.mkdir(parents=True, exist_ok=True)
        blob(colour).save(cats / f"rgba_{index}.png")
        blob(colour).convert("RGB").save(cats / f"photo_{index}.JPG")
        blob(colour).convert("P").save(dogs / f"palette_{index}.gif", transparency=0)
        blob(colour).convert("LA").save(dogs / f"gray_{index}.png")
        blob(colour).convert("RGB").convert("CMYK").save(dogs / f"print_{index}.tiff")
        blob(colour, size=(30, 45)).save(dogs / f"tall_{index}.webp")
    (folder / "empty").mkdir()
    (folder / ".DS_Store").write_bytes(bytes(32))
    (folder / "cats" / "._rgba_0.png").write_bytes(b"\x00\x05\x16\x07Mac OS X")
    (folder / ".ipynb_checkpoints").mkdir()
    (folder / ".ipynb_checkpoints" / "rgba-checkpoint.png").write_bytes(b"")
    png = io.BytesIO()
    blob(COLOURS[0]).save(png, format="PNG")
    (folder / "cats" / "truncated.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    (folder / "cats" / "empty.jpg").write_bytes(b"")
    (folder / "dogs" / "text.png").write_text("not a picture")


@pytest.mark.slow
def test_odd_folder_trains_with_one_warning(isolated_repository, tmp_path):
    folder = tmp_path / "pictures"
    odd_folder(folder)
    script = isolated_repository / "DCGAN" / "DCGAN.py"
    result = run_script(script, *QUICK_RUN, "DATASET_NAME=FOLDER", f"DATASET_PATH={folder}", "MINIBATCH_SIZE=16")

    assert "Traceback" not in result.stderr
    assert result.stderr.count("warning: skipped 3 of 75 image files") == 1
    for name in ("cats/truncated.png", "cats/empty.jpg", "dogs/text.png"):
        assert f"  {name}: " in result.stderr
    results = isolated_repository / "DCGAN" / "results_FOLDER"
    assert (results / "gen_epoch_1.png").exists()
    real = np.asarray(Image.open(results / "real" / "epoch_1.png").convert("RGB"), dtype=np.int32)
    assert (real.max(axis=-1) - real.min(axis=-1) > 80).mean() > 0.05  # coloured blobs on white


@pytest.mark.slow
def test_few_images_and_batch_of_one(isolated_repository, tmp_path):
    folder = tmp_path / "few"
    folder.mkdir()
    for index in range(5):
        blob(COLOURS[index % 4]).save(folder / f"{index}.png")
    script = isolated_repository / "DCGAN" / "DCGAN.py"
    run_script(script, *QUICK_RUN, "DATASET_NAME=FOLDER", f"DATASET_PATH={folder}", "MINIBATCH_SIZE=64")
    checkpoint = torch.load(isolated_repository / "DCGAN" / "results_FOLDER" / "checkpoint.pt", weights_only=True)
    assert len(checkpoint["history"]["iteration"]["generator loss"]) == 1  # one batch of all 5 images

    for index in range(5, 40):
        blob(COLOURS[index % 4]).save(folder / f"{index}.png")
    train_count = len(load_images("FOLDER", 32, None, root=isolated_repository / "data", folder=folder).images)
    # A batch size one below the training set leaves a last batch of one, which batch norm cannot train on.
    run_script(script, *QUICK_RUN, "DATASET_NAME=FOLDER", f"DATASET_PATH={folder}", f"MINIBATCH_SIZE={train_count - 1}")
    checkpoint = torch.load(isolated_repository / "DCGAN" / "results_FOLDER" / "checkpoint.pt", weights_only=True)
    assert len(checkpoint["history"]["iteration"]["generator loss"]) == 1


@pytest.mark.slow
def test_cgan_trains_on_class_folders(isolated_repository, tmp_path):
    folder = tmp_path / "two_classes"
    for index in range(24):
        (folder / "red").mkdir(parents=True, exist_ok=True)
        (folder / "blue").mkdir(exist_ok=True)
        blob(COLOURS[0]).save(folder / "red" / f"{index}.png")
        blob(COLOURS[2]).save(folder / "blue" / f"{index}.png")
    script = isolated_repository / "CGAN" / "CGAN.py"
    run_script(script, *QUICK_RUN, "DATASET_NAME=FOLDER", f"DATASET_PATH={folder}", "NUMBER_LABELS=2", "MINIBATCH_SIZE=16")
    grid = Image.open(isolated_repository / "CGAN" / "results_FOLDER" / "gen_epoch_1.png")
    assert grid.height == 2 * 34 + 2  # one row per class


def test_cgan_rejects_flat_folder(isolated_repository, tmp_path):
    folder = tmp_path / "flat"
    folder.mkdir()
    for index in range(4):
        blob(COLOURS[index]).save(folder / f"{index}.png")
    result = run_script(isolated_repository / "CGAN" / "CGAN.py", "DATASET_NAME=FOLDER", f"DATASET_PATH={folder}", expect_status=2)
    assert "CGAN needs a labelled dataset, but this one has a single class (flat)" in result.stderr
    assert result.stderr.strip().count("\n") == 0


@pytest.mark.parametrize(
    ("arguments", "status", "expected"),
    [
        (["DATASET_NAME=FOLDER"], 2, "invalid hyperparameter DATASET_PATH=None"),
        (["DATASET_NAME=FOLDER", "DATASET_PATH={missing}"], 1, "image folder {missing} not found"),
    ],
    ids=["no path", "missing folder"],
)
def test_folder_errors_are_one_line(isolated_repository, tmp_path, arguments, status, expected):
    # The other folder errors (empty, no image, no paintings) are checked in-process in test_folders.py.
    missing = tmp_path / "missing"
    arguments = [argument.format(missing=missing) for argument in arguments]
    result = run_script(isolated_repository / "DCGAN" / "DCGAN.py", *arguments, expect_status=status)
    assert expected.format(missing=missing) in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0


@pytest.mark.slow
@pytest.mark.parametrize("model", ["Autoencoder", "VAE"])
def test_autoencoders_train_on_odd_folder(isolated_repository, tmp_path, model):
    folder = tmp_path / "pictures"
    odd_folder(folder)
    script = isolated_repository / model / f"{model}.py"
    result = run_script(script, *QUICK_RUN, "DATASET_NAME=FOLDER", f"DATASET_PATH={folder}", "MINIBATCH_SIZE=16", "IMAGE_SIZE=64")

    assert "Traceback" not in result.stderr
    assert result.stderr.count("warning: skipped 3 of 75 image files") == 1
    results = isolated_repository / model / "results_FOLDER"
    decoded = Image.open(results / "decoded" / "epoch_1.png")
    assert decoded.mode == "RGB"
    assert decoded.width == 4 * 66 + 2  # 64 px tiles; the held-out split of 72 images fills two rows
    assert Image.open(results / "saved_generated" / "epoch_1.png").size == (4 * 66 + 2, 4 * 66 + 2)
