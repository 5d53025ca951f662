"""Results folder handling, grids, plots, metrics and checkpoints."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from common.checkpoints import load_checkpoint, save_atomically
from common.errors import UserError
from common.outputs import append_metrics_row, prepare_results_folder, save_grid, save_loss_plot, save_progress_gif


def test_grid_mapping_is_fixed_and_clamped(tmp_path):
    images = torch.stack([torch.full((1, 4, 4), value) for value in (-3.0, -1.0, 0.0, 1.0, 5.0)])
    save_grid(images, tmp_path / "grid.png", columns=5)
    pixels = np.asarray(Image.open(tmp_path / "grid.png").convert("L"))
    centres = [pixels[4, 2 + index * 6 + 2] for index in range(5)]  # padding 2, tiles of 4 px
    assert centres == [0, 0, 128, 255, 255]


def test_grid_of_dim_images_stays_dim(tmp_path):
    images = torch.full((4, 1, 4, 4), -0.8)
    images[0, 0, 0, 0] = -0.6
    save_grid(images, tmp_path / "grid.png", columns=2)
    pixels = np.asarray(Image.open(tmp_path / "grid.png").convert("L"))
    assert pixels[2:6, 2:6].max() < 60  # a per-image min-max stretch would make it 255


def test_grid_rows_and_columns(tmp_path):
    save_grid(torch.zeros(16, 3, 8, 8), tmp_path / "nested" / "grid.png", columns=4)
    image = Image.open(tmp_path / "nested" / "grid.png")
    assert image.size == (4 * 10 + 2, 4 * 10 + 2)
    assert image.mode == "RGB"


def test_earlier_results_moved_aside(tmp_path):
    results = tmp_path / "results_MNIST"
    results.mkdir()
    (results / "gen_epoch_1.png").write_bytes(b"old")
    moved_to = prepare_results_folder(results)
    assert moved_to is not None
    assert moved_to.name.startswith("results_MNIST_")
    assert (moved_to / "gen_epoch_1.png").read_bytes() == b"old"
    assert results.is_dir()
    assert list(results.iterdir()) == []


def test_empty_results_folder_reused(tmp_path):
    results = tmp_path / "results_MNIST"
    results.mkdir()
    assert prepare_results_folder(results) is None
    assert results.is_dir()


def test_unwritable_results_folder_reported(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the results folder's parent should be")
    with pytest.raises(UserError) as raised:
        prepare_results_folder(blocker / "results_MNIST")
    assert f"cannot write to the results folder {blocker / 'results_MNIST'}" in str(raised.value)


@pytest.mark.parametrize("kind", ["file", "broken link"])
def test_results_path_taken_by_file(tmp_path, kind):
    results = tmp_path / "results_MNIST"
    if kind == "file":
        results.write_text("not a folder")
    else:
        results.symlink_to(tmp_path / "missing")
    with pytest.raises(UserError) as raised:
        prepare_results_folder(results)
    assert f"the results folder {results} is a file or a broken link, not a folder; move or delete it" in str(raised.value)


def test_full_disk_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_atomically({"epoch": 1}, path)
    temporary = tmp_path / f".checkpoint.pt.{os.getpid()}.tmp"
    temporary.symlink_to("/dev/full")  # every write through this name fails with ENOSPC, as on a full disk
    with pytest.raises(UserError) as raised:
        save_atomically({"epoch": 2, "weights": torch.zeros(1000)}, path)
    assert f"cannot write {path}" in str(raised.value)
    assert "an earlier checkpoint.pt is kept" in str(raised.value)
    assert load_checkpoint(path) == {"epoch": 1}
    assert not temporary.exists()


def test_metrics_rows_appended_with_header(tmp_path):
    path = tmp_path / "metrics.csv"
    append_metrics_row(path, {"epoch": 1, "loss": 0.5})
    append_metrics_row(path, {"epoch": 2, "loss": 0.25})
    assert path.read_text().splitlines() == ["epoch,loss", "1,0.5", "2,0.25"]


def test_loss_plot_written(tmp_path):
    save_loss_plot({"generator": [1.0, 0.8], "discriminator": [0.7, 0.6]}, {"generator": [1.2, 1.0, 0.9], "discriminator": [0.8] * 3}, tmp_path / "losses.png")
    image = Image.open(tmp_path / "losses.png")
    assert image.size[0] > 500
    assert np.asarray(image.convert("L")).std() > 10


def test_progress_gif_has_frame_per_grid(tmp_path):
    frames = []
    for index in range(3):
        path = tmp_path / f"gen_epoch_{index + 1}.png"
        save_grid(torch.full((4, 1, 4, 4), index / 2 - 0.5), path, columns=2)
        frames.append(path)
    save_progress_gif(frames, tmp_path / "progress.gif")
    gif = Image.open(tmp_path / "progress.gif")
    assert gif.n_frames == 3


def test_checkpoint_roundtrip_weights_only(tmp_path):
    path = tmp_path / "checkpoint.pt"
    content = {"epoch": 2, "weights": {"layer": torch.arange(4.0)}, "hyperparameters": {"SEED": None, "DEVICE": "auto"}}
    save_atomically(content, path)
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 2
    assert torch.equal(loaded["weights"]["layer"], torch.arange(4.0))
    assert loaded["hyperparameters"] == {"SEED": None, "DEVICE": "auto"}
    assert [entry.name for entry in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_failed_checkpoint_write_keeps_previous(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_atomically({"epoch": 1}, path)
    with pytest.raises(Exception):
        save_atomically({"epoch": 2, "unpicklable": lambda: None}, path)
    assert load_checkpoint(path) == {"epoch": 1}
    assert [entry.name for entry in tmp_path.iterdir()] == ["checkpoint.pt"]
