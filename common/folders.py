"""Image folders as datasets: find the image files and their classes, split off held-out images,
decode every file once before training, and report the files that cannot be read.

A folder's subfolders that contain images are its classes, named after the subfolders and sorted,
as in torchvision's ImageFolder layout. A folder without such subfolders is one class. Hidden names
(starting with ".") and files without an image extension are ignored. The prepared tensors are
cached with a fingerprint of the file list, so adding, removing or changing a file rebuilds them.
"""

import functools
import hashlib
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets.folder import IMG_EXTENSIONS
from tqdm import tqdm

from common.data import ImageSet, convert_channels, read_cache, write_cache
from common.errors import UserError
from common.images import prepare_image_or_error

# torchvision 0.29.1's IMG_EXTENSIONS (.jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp) lacks GIF, the sprites' format.
IMAGE_EXTENSIONS = (*IMG_EXTENSIONS, ".gif")
# Folders that tools write beside images: zip archives made on macOS keep AppleDouble files in __MACOSX/.
IGNORED_FOLDER_NAMES = ("__MACOSX",)
FOLDER_CACHE_FORMAT = 1  # bump when the prepared folder tensors change, so old caches are rebuilt
HELD_OUT_EVERY = 10  # about 1 image in 10 goes to the test split
MAX_LISTED_FILES = 10  # unreadable files named in the warning; the rest are counted
# Decoding uses one worker thread per this many files, up to MAX_WORKERS and the cores available.
FILES_PER_WORKER = 100
MAX_WORKERS = 8

# Fingerprints whose unreadable files were already reported by this process, so that loading the
# test split after the training split does not repeat the warning.
_reported_fingerprints: set[str] = set()


@dataclass
class FolderListing:
    """The image files of a folder, sorted by path, with their class indices."""

    folder: Path
    files: list[Path]
    labels: list[int]
    class_names: list[str]
    loose_files: list[Path]  # images directly in a folder that also has class subfolders; not used


def is_hidden(name: str) -> bool:
    """Return whether a file or folder name is hidden: .DS_Store, .ipynb_checkpoints and macOS ._name.png files."""
    return name.startswith(".")


def is_image_name(name: str) -> bool:
    return not is_hidden(name) and name.lower().endswith(IMAGE_EXTENSIONS)


def is_listed_folder(name: str) -> bool:
    return not is_hidden(name) and name not in IGNORED_FOLDER_NAMES


def accepted_types() -> str:
    """Return the accepted file name extensions as one phrase, for error messages."""
    return ", ".join(IMAGE_EXTENSIONS) + " (any case)"


def list_image_files(folder: Path) -> list[Path]:
    """Return the image files under `folder` at any depth, sorted, skipping hidden files and folders.

    Symbolic links to folders are followed once each, so a link cycle cannot loop. Only regular
    files are listed: a broken link or a named pipe called photo.png is left out.
    """
    found = []
    visited = set()
    for directory, subfolders, names in os.walk(folder, followlinks=True):
        real_path = os.path.realpath(directory)
        if real_path in visited:
            subfolders[:] = []
            continue
        visited.add(real_path)
        subfolders[:] = sorted(name for name in subfolders if is_listed_folder(name))
        found += [Path(directory) / name for name in names if is_image_name(name) and os.path.isfile(os.path.join(directory, name))]
    return sorted(found)


def scan_folder(folder: Path, hint: str) -> FolderListing:
    """List a folder's images and classes, or raise UserError naming the folder, the accepted types and `hint`."""
    if not folder.exists():
        raise UserError(f"image folder {folder} not found: expected a folder of {accepted_types()} files; {hint}")
    if not folder.is_dir():
        raise UserError(f"{folder} is a file, not a folder of images: {hint}")
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as error:
        raise UserError(f"cannot read the image folder {folder}: {error.strerror}") from None

    class_files = {}
    for entry in entries:
        if entry.is_dir() and is_listed_folder(entry.name):
            files = list_image_files(Path(entry.path))
            if files:  # a subfolder without images (empty, or notes only) is not a class
                class_files[entry.name] = files
    loose_files = [Path(entry.path) for entry in entries if entry.is_file() and is_image_name(entry.name)]

    if class_files:
        class_names = sorted(class_files)
        files = [path for name in class_names for path in class_files[name]]
        labels = [index for index, name in enumerate(class_names) for _ in class_files[name]]
        return FolderListing(folder, files, labels, class_names, loose_files)
    if loose_files:
        return FolderListing(folder, loose_files, [0] * len(loose_files), [folder.name], [])
    raise UserError(
        f"no image files in {folder}: expected files ending in {accepted_types()}, "
        f"directly in it or in one subfolder per class; {hint}"
    )


def relative_name(listing: FolderListing, path: Path) -> str:
    return path.relative_to(listing.folder).as_posix()


def fingerprint(listing: FolderListing) -> str:
    """Return a hash of every listed file's relative path, size and modification time."""
    digest = hashlib.sha256(f"{listing.folder.resolve()}\n".encode("utf-8", "surrogateescape"))
    for path in listing.files:
        try:
            status = path.stat()
            signature = f"{status.st_size}|{status.st_mtime_ns}"
        except OSError as error:  # a broken link: its state still belongs to the fingerprint
            signature = f"unreadable|{error.errno}"
        digest.update(f"{relative_name(listing, path)}|{signature}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def file_key(relative: str) -> bytes:
    """Return a fixed pseudo-random key of a file's relative path: it orders the images and picks the held-out ones."""
    return hashlib.sha256(relative.encode("utf-8", "surrogateescape")).digest()


def is_held_out(key: bytes) -> bool:
    # Depends on the file's own name only, so adding or removing other files never moves it between splits.
    return int.from_bytes(key[:8], "big") % HELD_OUT_EVERY == 0


def worker_count(file_count: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, MAX_WORKERS, file_count // FILES_PER_WORKER))


def decode_files(paths: list[Path], size: int, policy: str, background: tuple[int, int, int], description: str) -> list[tuple[np.ndarray | None, str | None]]:
    """Decode every file with prepare_image_or_error, in worker threads when there are many, with a progress bar.

    Pillow releases the GIL inside its decoders and its resize, so the threads can run in parallel.
    NOTE: the speed-up is unmeasured. On the 2-core test machine other jobs kept both cores busy,
    and 2 threads decoded no faster than 1.
    """
    decode = functools.partial(prepare_image_or_error, size=size, policy=policy, background=background)
    results = []
    # disable=None hides the bar when stderr is no terminal (a log file, CI).
    with tqdm(total=len(paths), desc=f"preparing {description}", unit="image", leave=False, disable=None) as progress:
        with ThreadPoolExecutor(worker_count(len(paths))) as executor:
            for result in executor.map(decode, paths):
                results.append(result)
                progress.update()
    return results


def build_splits(listing: FolderListing, size: int, policy: str, background: tuple[int, int, int], description: str) -> tuple[dict[str, ImageSet], list[tuple[str, str]], bool]:
    """Decode every listed file and split the readable ones into training and held-out RGB image sets.

    Returns the two sets, the unreadable files as (relative path, reason) pairs, and whether both
    splits hold every image because one of them would otherwise be empty. Images are ordered by
    file_key, so the first N of a split mix all classes; about 1 in HELD_OUT_EVERY is held out.
    """
    results = decode_files(listing.files, size, policy, background, description)
    skipped = [(relative_name(listing, path), error) for path, (_, error) in zip(listing.files, results) if error is not None]
    readable = [
        (file_key(relative_name(listing, path)), label, pixels)
        for path, label, (pixels, _) in zip(listing.files, listing.labels, results)
        if pixels is not None
    ]
    if not readable:
        report_skipped(listing, skipped)
        raise UserError(
            f"none of the {len(listing.files)} image files in {listing.folder} can be read (listed above); "
            "replace them with readable images or use another folder"
        )
    readable.sort(key=lambda item: item[0])

    # Classes left without a readable image are dropped, and the remaining labels renumbered.
    used_labels = sorted({label for _, label, _ in readable})
    new_label = {old: new for new, old in enumerate(used_labels)}
    class_names = [listing.class_names[label] for label in used_labels]

    held_out = [is_held_out(key) for key, _, _ in readable]
    shared = all(held_out) or not any(held_out)
    members = {"train": [], "test": []}
    for (_, label, pixels), in_test in zip(readable, held_out):
        if shared:
            members["train"].append((label, pixels))
            members["test"].append((label, pixels))
        else:
            members["test" if in_test else "train"].append((label, pixels))

    splits = {}
    for split, items in members.items():
        images = torch.from_numpy(np.stack([pixels for _, pixels in items])).permute(0, 3, 1, 2).contiguous()
        labels = torch.tensor([new_label[label] for label, _ in items], dtype=torch.int64)
        splits[split] = ImageSet(images, labels, class_names)
    return splits, skipped, shared


def report_skipped(listing: FolderListing, skipped: list[tuple[str, str]]) -> None:
    """Print one warning naming the unreadable files, at most MAX_LISTED_FILES of them, and how many more there are."""
    if not skipped:
        return
    lines = [f"warning: skipped {len(skipped)} of {len(listing.files)} image files in {listing.folder} that cannot be read:"]
    lines += [f"  {name}: {reason}" for name, reason in skipped[:MAX_LISTED_FILES]]
    if len(skipped) > MAX_LISTED_FILES:
        lines.append(f"  ... and {len(skipped) - MAX_LISTED_FILES} more")
    print("\n".join(lines), file=sys.stderr)


def report_notes(listing: FolderListing, key: str, skipped: list[tuple[str, str]], shared: bool) -> None:
    """Print the warnings about a folder's files once per process: unreadable files, unused loose files, a shared split.

    `key` is the folder's fingerprint, so the warnings come again once its files change.
    """
    if key in _reported_fingerprints:
        return
    _reported_fingerprints.add(key)
    report_skipped(listing, skipped)
    if listing.loose_files:
        count = len(listing.loose_files)
        names = ", ".join(path.name for path in listing.loose_files[:MAX_LISTED_FILES])
        more = f" and {count - MAX_LISTED_FILES} more" if count > MAX_LISTED_FILES else ""
        print(
            f"warning: {count} image file{'s' if count != 1 else ''} directly in {listing.folder} not used, because the folder "
            f"has class subfolders ({', '.join(listing.class_names)}): {names}{more}. Move them into a class subfolder to use them",
            file=sys.stderr,
        )
    if shared:
        print(
            f"warning: {listing.folder} has too few images to hold out about 1 in {HELD_OUT_EVERY}, "
            "so its test split is the training split",
            file=sys.stderr,
        )


def cache_file_name(cache_name: str, split: str, size: int, channels: int) -> str:
    return f"{cache_name}_{split}_{size}px_{channels}ch.pt"


def safe_name(text: str) -> str:
    """Return text with every character other than letters, digits, - and _ replaced, for a cache file name."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)[:40]


def load_folder_images(
    folder: Path,
    cache_name: str,
    image_size: int,
    channels: int,
    train: bool,
    policy: str,
    background: tuple[int, int, int],
    cache_folder: Path,
    hint: str,
) -> ImageSet:
    """Return the training or held-out split of an image folder as one uint8 N x channels x S x S tensor.

    Both splits are decoded together and cached under `cache_folder` with the folder's
    fingerprint, so they are rebuilt when a file is added, removed or modified.
    """
    listing = scan_folder(folder, hint)
    files_key = fingerprint(listing)
    # The cache file name contains the size and channels, and the key the policy and background.
    key = f"{files_key}|{policy}|{background}"
    split = "train" if train else "test"

    cached = read_cache(cache_folder / cache_file_name(cache_name, split, image_size, channels), FOLDER_CACHE_FORMAT)
    if cached is not None and cached.get("fingerprint") == key:
        report_notes(listing, files_key, [tuple(item) for item in cached["skipped"]], cached["shared_split"])
        return ImageSet(cached["images"], cached["labels"], cached["class_names"])

    splits, skipped, shared = build_splits(listing, image_size, policy, background, cache_name)
    report_notes(listing, files_key, skipped, shared)
    for name, rgb_set in splits.items():
        splits[name] = ImageSet(convert_channels(rgb_set.images, channels), rgb_set.labels, rgb_set.class_names)
        write_cache(cache_folder / cache_file_name(cache_name, name, image_size, channels), {
            "format": FOLDER_CACHE_FORMAT,
            "fingerprint": key,
            "images": splits[name].images,
            "labels": splits[name].labels,
            "class_names": splits[name].class_names,
            "skipped": [list(item) for item in skipped],
            "shared_split": shared,
        })
    return splits[split]
