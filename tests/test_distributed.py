"""Data-parallel training under torchrun: 2 CPU processes with gloo on a slice of real MNIST."""

import csv
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as multiprocessing

from common.data import BatchLoader, ImageSet
from common.distributed import check_replicas_identical
from common.networks import Generator
from tests.conftest import run_script

TINY_RUN = ["MAX_TRAIN_IMAGES=256", "MINIBATCH_SIZE=32", "COMPLEXITY=4", "NB_IMAGE_TO_GENERATE=2", "DEVICE=cpu", "SEED=3", "METRICS_SAMPLES=0"]


def torchrun(script: Path, *arguments: str, processes: int = 2, environment: dict | None = None, **popen) -> subprocess.Popen:
    """Start `script` under torchrun with `processes` processes on this machine."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", script.name, *arguments]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(environment or {})}
    return subprocess.Popen(command, cwd=script.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def finish(process: subprocess.Popen, expect_status: int = 0) -> tuple[str, str]:
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == expect_status, stderr[-3000:]
    return stdout, stderr


def metrics_epochs(results: Path) -> list[int]:
    with open(results / "metrics.csv", newline="") as file:
        return [int(row["epoch"]) for row in csv.DictReader(file)]


def test_shards_split_each_epoch():
    images = torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1).expand(100, 1, 4, 4).contiguous()
    image_set = ImageSet(images, torch.zeros(100, dtype=torch.int64), ["all"])
    loaders = [BatchLoader(image_set, 10, torch.device("cpu"), seed=7, rank=rank, world_size=2) for rank in range(2)]
    assert [len(loader) for loader in loaders] == [5, 5]  # 50 images a process, in batches of 10
    for _ in range(2):  # two epochs
        first, second = (set(loader.epoch_indices().tolist()) for loader in loaders)
        assert len(first) == 50
        assert not first & second
        assert first | second == set(range(100))


def test_shards_reshuffle_between_epochs():
    image_set = ImageSet(torch.zeros(64, 1, 4, 4, dtype=torch.uint8), torch.zeros(64, dtype=torch.int64), ["all"])
    loader = BatchLoader(image_set, 8, torch.device("cpu"), seed=7, rank=1, world_size=2)
    assert not torch.equal(loader.epoch_indices(), loader.epoch_indices())


def check_differing_replicas(rank: int, port: int, errors) -> None:
    """Join a 2-process gloo group, give each rank a different generator, and record what the check raises."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(rank)
    try:
        check_replicas_identical({"generator": Generator(8, 1, 32, 4)}, epoch=1)
        errors.put((rank, None))
    except RuntimeError as error:
        errors.put((rank, str(error)))
    finally:
        dist.destroy_process_group()


def test_differing_replicas_are_detected():
    context = multiprocessing.get_context("spawn")
    errors = context.Queue()
    port = 29_000 + os.getpid() % 1000
    processes = [context.Process(target=check_differing_replicas, args=(rank, port, errors)) for rank in range(2)]
    for process in processes:
        process.start()
    results = dict(errors.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=60)
    assert results[0] == "the generator of rank 1 differs from rank 0's after epoch 1"
    assert results[1] == results[0]


@pytest.mark.slow
def test_two_processes_write_outputs_once(repository):
    script = repository / "DCGAN" / "DCGAN.py"
    stdout, stderr = finish(torchrun(script, *TINY_RUN, "NB_EPOCH=2"))
    results = script.parent / "results_MNIST"

    assert stdout.count("DCGAN: training on 256 MNIST images on 2 processes on cpu") == 1
    assert stdout.count("epoch 1/2:") == 1
    assert stdout.count("epoch 2/2:") == 1
    assert metrics_epochs(results) == [1, 2]
    assert (results / "gen_epoch_2.png").exists()
    assert (results / "progress.gif").exists()
    checkpoint = torch.load(results / "checkpoint.pt", weights_only=True)
    assert not [key for key in checkpoint["generator"] if key.startswith("module.")]
    # 256 images in 2 shards of 128, 4 batches of 32 each: 4 averaged iterations an epoch.
    assert len(checkpoint["history"]["iteration"]["generator loss"]) == 8


@pytest.mark.slow
def test_two_process_run_resumes_alone(repository):
    script = repository / "VAE" / "VAE.py"
    arguments = [*TINY_RUN, "MAX_TEST_IMAGES=64", "CODE_SIZE=4"]
    finish(torchrun(script, *arguments, "NB_EPOCH=1"))
    resumed = run_script(script, "--resume", *arguments, "NB_EPOCH=2")
    assert "resuming after epoch 1" in resumed.stdout
    assert metrics_epochs(script.parent / "results_MNIST") == [1, 2]
    assert torch.load(script.parent / "results_MNIST" / "checkpoint.pt", weights_only=True)["epoch"] == 2


@pytest.mark.slow
def test_single_process_run_resumes_on_two(repository):
    script = repository / "CGAN" / "CGAN.py"
    arguments = [*TINY_RUN, "DATASET_NAME=MNIST"]
    run_script(script, *arguments, "NB_EPOCH=1")
    stdout, _ = finish(torchrun(script, "--resume", *arguments, "NB_EPOCH=2"))
    assert stdout.count("resuming after epoch 1") == 1
    assert metrics_epochs(script.parent / "results_MNIST") == [1, 2]
    assert torch.load(script.parent / "results_MNIST" / "checkpoint.pt", weights_only=True)["epoch"] == 2


def process_with(marker: str, rank: str) -> int | None:
    """Return the pid of the process whose environment has TEST_MARKER=`marker` and RANK=`rank`."""
    for entry in Path("/proc").iterdir():
        try:
            environment = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"TEST_MARKER={marker}".encode() in environment and f"RANK={rank}".encode() in environment:
            return int(entry.name)
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process through /proc")
def test_killed_rank_stops_the_run_with_its_rank(repository):
    script = repository / "DCGAN" / "DCGAN.py"
    results = script.parent / "results_MNIST"
    marker = uuid.uuid4().hex
    process = torchrun(script, *TINY_RUN, "NB_EPOCH=500", environment={"TEST_MARKER": marker})
    deadline = time.monotonic() + 120
    while not (results / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    rank_1 = process_with(marker, "1")
    assert rank_1 is not None
    os.kill(rank_1, signal.SIGKILL)

    _, stderr = finish(process, expect_status=1)
    assert "DCGAN.py: error: the run stopped because rank 1 stopped without an error message" in stderr
    assert torch.load(results / "checkpoint.pt", weights_only=True)["epoch"] >= 1


@pytest.mark.slow
def test_nan_stops_every_rank_with_one_line(repository):
    script = repository / "LSGAN" / "LSGAN.py"
    _, stderr = finish(torchrun(script, *TINY_RUN, "NB_EPOCH=2", "LEARNING_RATE=1e30"), expect_status=1)
    errors = [line for line in stderr.splitlines() if line.startswith("LSGAN.py: error:")]
    assert len(errors) == 1
    assert "LSGAN: the " in errors[0]
    assert " became nan at epoch 1" in errors[0]
    assert "Traceback" not in stderr.split("LSGAN.py: error:")[0]  # torchrun's own report may follow


def test_failure_is_shared_through_the_store(monkeypatch):
    from common.distributed import failure_report, report_failure

    server = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(server.port))
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert failure_report() is None
    report_failure("the first error")
    report_failure("a later error")
    assert failure_report() == "rank 0: the first error"


@pytest.mark.slow
def test_metrics_under_torchrun(repository, installed_classifier):
    script = repository / "DCGAN" / "DCGAN.py"
    arguments = [argument for argument in TINY_RUN if not argument.startswith("METRICS_SAMPLES")]
    stdout, _ = finish(torchrun(script, *arguments, "NB_EPOCH=2", "METRICS_SAMPLES=200", "METRICS_EVERY=1"))
    assert stdout.count("metrics on MNIST classifier features, 200 samples") == 2
    with open(script.parent / "results_MNIST" / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert all(float(row["frechet_distance"]) > 0 for row in rows)
