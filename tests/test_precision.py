"""PRECISION: its validation and resolution, bf16 training on the CPU, channels-last, and the speed benchmarks."""

import csv
import math
import subprocess
import sys

import pytest
import torch

from common.coders import Decoder, Encoder
from common.config import load_hyperparameters, read_hyperparameters
from common.networks import Discriminator, Generator
from common.precision import Precision, resolve_precision
from conftest import MODEL_FOLDERS, REPO_ROOT
from tests.conftest import run_script
from VAE.models import VAE

TINY_RUN = ["NB_EPOCH=1", "MAX_TRAIN_IMAGES=128", "MINIBATCH_SIZE=32", "COMPLEXITY=4", "NB_IMAGE_TO_GENERATE=2", "DEVICE=cpu"]
CPU = torch.device("cpu")


@pytest.mark.parametrize("model", MODEL_FOLDERS)
def test_every_model_defaults_to_auto(model):
    entries = read_hyperparameters(REPO_ROOT / model / "hyperparameters.py")
    assert entries["PRECISION"].value == "auto"
    assert entries["PRECISION"].comment


def test_precision_override_lowercased():
    values, _ = load_hyperparameters(REPO_ROOT / "DCGAN" / "hyperparameters.py", ["PRECISION=BF16"])
    assert values["PRECISION"] == "bf16"


@pytest.mark.parametrize("model", ["DCGAN", "VAE"])
def test_invalid_precision_is_one_line(repository, model):
    result = run_script(repository / model / f"{model}.py", "PRECISION=fp16", expect_status=2)
    assert result.stderr == f"{model}.py: error: invalid hyperparameter PRECISION='fp16': expected one of auto, fp32, bf16\n"


@pytest.mark.parametrize(
    ("requested", "device_type", "fast_bf16", "expected"),
    [
        ("auto", "cpu", False, "fp32"),
        ("auto", "cpu", True, "bf16"),
        ("auto", "cuda", False, "fp32"),
        ("auto", "cuda", True, "bf16"),
        ("auto", "mps", False, "fp32"),
        ("fp32", "cpu", True, "fp32"),
        ("bf16", "cpu", False, "bf16"),
    ],
)
def test_resolve_precision(requested, device_type, fast_bf16, expected):
    assert resolve_precision(requested, device_type, fast_bf16) == expected


def test_cpu_precision_uses_channels_last():
    for requested in ("fp32", "bf16"):
        precision = Precision.for_device(requested, CPU)
        assert precision.name == requested
        assert precision.channels_last


def test_autocast_only_in_bf16():
    convolution = torch.nn.Conv2d(3, 4, 3)
    images = torch.randn(2, 3, 8, 8)
    with Precision("bf16", "cpu", True).autocast():
        assert convolution(images).dtype == torch.bfloat16
    with Precision("fp32", "cpu", True).autocast():
        assert convolution(images).dtype == torch.float32


def test_networks_return_fp32_under_bf16():
    torch.manual_seed(0)
    latent, images = torch.randn(4, 16), torch.rand(4, 1, 32, 32)
    with Precision("bf16", "cpu", True).autocast():
        assert Generator(16, 1, 32, 4)(latent).dtype == torch.float32
        assert Discriminator(1, 32, 4)(images).dtype == torch.float32
        assert Encoder(1, 32, 4, 6)(images).dtype == torch.float32
        assert Decoder(6, 1, 32, 4)(torch.randn(4, 6)).dtype == torch.float32
        losses = VAE(1, 32, 4, 3).losses(images)
    for name, value in losses.items():
        assert value.dtype == torch.float32, name


@pytest.mark.parametrize("network_class", ["discriminator", "generator", "encoder"])
def test_channels_last_matches_contiguous(network_class):
    torch.manual_seed(0)
    network, inputs = {
        "discriminator": (Discriminator(3, 32, 8), torch.rand(8, 3, 32, 32) * 2 - 1),
        "generator": (Generator(16, 3, 32, 8), torch.randn(8, 16)),
        "encoder": (Encoder(3, 32, 8, 6), torch.rand(8, 3, 32, 32)),
    }[network_class]
    precision = Precision("fp32", "cpu", channels_last=True)
    expected = network(inputs)

    converted = precision.prepare_network(network)
    weight = next(parameter for parameter in converted.parameters() if parameter.dim() == 4)
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert not weight.is_contiguous()
    if inputs.dim() == 4:
        inputs = precision.prepare_images(inputs)
        assert inputs.is_contiguous(memory_format=torch.channels_last)
    actual = converted(inputs)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["DCGAN", "VAE"])
def test_bf16_epoch_on_cpu(repository, model):
    script = repository / model / f"{model}.py"
    extra = ["MAX_TEST_IMAGES=64", "CODE_SIZE=4"] if model == "VAE" else []
    result = run_script(script, "PRECISION=bf16", *TINY_RUN, *extra)
    assert " in bf16, seed " in result.stdout
    results = script.parent / "results_MNIST"

    with open(results / "metrics.csv", newline="") as file:
        row = next(csv.DictReader(file))
    losses = {name: float(value) for name, value in row.items() if name.endswith("loss") or name.endswith("elbo")}
    assert losses
    for name, value in losses.items():
        assert math.isfinite(value), name

    checkpoint = torch.load(results / "checkpoint.pt", weights_only=True)
    networks = ("generator", "discriminator") if model == "DCGAN" else ("encoder", "decoder")
    for network in networks:
        for name, tensor in checkpoint[network].items():
            if tensor.is_floating_point():
                assert tensor.dtype == torch.float32, f"{network}.{name}"
    assert checkpoint["hyperparameters"]["PRECISION"] == "bf16"


@pytest.mark.slow
def test_resume_in_another_precision(repository):
    script = repository / "LSGAN" / "LSGAN.py"
    run_script(script, "PRECISION=fp32", *TINY_RUN)
    result = run_script(script, "--resume", "PRECISION=bf16", *TINY_RUN[1:], "NB_EPOCH=2")
    assert "resuming after epoch 1" in result.stdout
    assert " in bf16, seed " in result.stdout
    checkpoint = torch.load(script.parent / "results_MNIST" / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 2
    assert checkpoint["hyperparameters"]["PRECISION"] == "bf16"


@pytest.mark.slow
def test_benchmark_writes_its_table(tmp_path, mnist):
    output = tmp_path / "BENCHMARKS.md"
    output.write_text("# Benchmarks\n\nnotes before\n\n<!-- train_speed.py table: begin -->\nold table\n<!-- train_speed.py table: end -->\n\nnotes after\n")
    command = [
        sys.executable, "benchmarks/train_speed.py", "--models", "DCGAN", "--sizes", "32", "--channels", "1",
        "--steps", "2", "--repeats", "1", "--reference-workers", "0", "--output", str(output),
    ]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    text = output.read_text()
    assert "old table" not in text
    assert text.startswith("# Benchmarks\n\nnotes before\n\n<!-- train_speed.py table: begin -->\n")
    assert text.endswith("<!-- train_speed.py table: end -->\n\nnotes after\n")
    row = next(line for line in text.splitlines() if line.startswith("| DCGAN |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:3] == ["DCGAN", "32", "1"]
    assert cells[3] in ("fp32", "bf16")
    assert float(cells[4]) > 0  # project images per second
    assert float(cells[5]) > 0  # reference images per second
    assert float(cells[7]) > 0.01  # GFLOP per training image, project
    assert float(cells[8]) > float(cells[7])  # the reference also computes the discriminator's weight gradients in the generator update
    assert "torch " + torch.__version__ in text
    assert "DCGAN 32 px 1 ch: project" in result.stdout


def test_benchmark_rejects_unknown_model(tmp_path):
    command = [sys.executable, "benchmarks/train_speed.py", "--models", "GAN", "--output", str(tmp_path / "B.md")]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == "train_speed.py: error: invalid model 'GAN': expected some of DCGAN, LSGAN, CGAN, Autoencoder, VAE"
    assert not (tmp_path / "B.md").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_step_speed_without_cuda_is_one_line():
    result = subprocess.run([sys.executable, "benchmarks/step_speed.py"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr == "step_speed.py: error: CUDA is not available on this machine; run it on a machine with an NVIDIA GPU, or pass --device cpu\n"


@pytest.mark.slow
def test_step_speed_runs_on_cpu():
    command = [sys.executable, "benchmarks/step_speed.py", "--device", "cpu", "--sizes", "32", "--steps", "1", "--repeats", "1", "--no-compile"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    variants = [line[:30].rstrip() for line in result.stdout.splitlines()]
    for variant in ("fp32", "fp32 channels-last", "bf16", "bf16 channels-last"):
        assert variant in variants
