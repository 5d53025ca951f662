"""LSGAN loss, conditional networks, conditioning and sampling from trained GAN checkpoints."""

import numpy as np
import pytest
import torch
from PIL import Image

from CGAN.models import ConditionalDiscriminator, ConditionalGenerator
from CGAN.models import build_networks as build_conditional_networks
from CGAN.models import score_loss as bce_loss
from common.adversarial import AdversarialTrainer, GANModel
from common.data import BatchLoader, ImageSet
from common.sampling import spherical_path
from conftest import run_script
from LSGAN.models import score_loss as least_squares_loss

QUICK_RUN = ["NB_EPOCH=1", "MAX_TRAIN_IMAGES=256", "COMPLEXITY=8", "NB_IMAGE_TO_GENERATE=4", "DEVICE=cpu", "DATASET_NAME=MNIST", "METRICS_SAMPLES=0"]


def test_least_squares_loss_known_values():
    assert least_squares_loss(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 1.0])).item() == 0.0
    assert least_squares_loss(torch.tensor([0.5]), torch.tensor([1.0])).item() == pytest.approx(0.125)
    assert least_squares_loss(torch.tensor([3.0, -1.0]), torch.tensor([1.0, 0.0])).item() == pytest.approx(0.5 * (4 + 1) / 2)


def test_least_squares_objectives():
    real_scores, fake_scores = torch.tensor([0.8, 1.2]), torch.tensor([0.1, -0.3])
    discriminator_loss = least_squares_loss(real_scores, torch.ones(2)) + least_squares_loss(fake_scores, torch.zeros(2))
    expected = 0.5 * ((real_scores - 1) ** 2).mean() + 0.5 * (fake_scores**2).mean()
    assert discriminator_loss.item() == pytest.approx(expected.item())
    generator_loss = least_squares_loss(fake_scores, torch.ones(2))
    assert generator_loss.item() == pytest.approx((0.5 * (fake_scores - 1) ** 2).mean().item())


@pytest.mark.parametrize("image_size", [32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_conditional_shapes(image_size, channels):
    generator = ConditionalGenerator(16, label_count=10, image_channels=channels, image_size=image_size, complexity=8)
    discriminator = ConditionalDiscriminator(10, channels, image_size, complexity=8, packing=2)
    labels = torch.tensor([0, 3, 9, 9, 1])
    images = generator(torch.randn(5, 16), labels)
    assert images.shape == (5, channels, image_size, image_size)
    assert discriminator(images, labels).shape == (2,)


def test_labels_packed_with_their_images():
    discriminator = ConditionalDiscriminator(label_count=4, image_channels=1, image_size=32, complexity=8, packing=2)
    seen = {}
    first_convolution = discriminator.discriminator.layers[0]
    first_convolution.register_forward_hook(lambda module, inputs, output: seen.update(input=inputs[0]))
    images = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 32, 32)
    labels = torch.tensor([2, 0, 3, 1])
    discriminator(images, labels)

    packed = seen["input"]
    assert packed.shape == (2, 2 * (1 + 4), 32, 32)
    for position in range(4):
        group, member = divmod(position, 2)
        channels = packed[group, member * 5 : (member + 1) * 5, 0, 0]
        assert channels[0].item() == position
        assert channels[1:].argmax().item() == labels[position].item()
        assert channels[1:].sum().item() == 1


def test_conditioning_controls_brightness():
    """Train on dark images labelled 0 and bright images labelled 1, then ask for each class."""
    torch.manual_seed(0)
    count = 128
    labels = torch.arange(count) % 2
    brightness = torch.where(labels == 1, 200.0, 40.0).view(count, 1, 1, 1)
    images = (brightness + torch.randn(count, 1, 16, 16) * 20).clamp(0, 255).to(torch.uint8)
    hyperparameters = {
        "IMAGE_SIZE": 16, "COMPLEXITY": 8, "LATENT_INPUT": 16, "DROPOUT_PROB": 0.0, "PACKING": 1,
        "NUMBER_LABELS": 2, "WEIGHTS_MEAN": 0.0, "WEIGHTS_STD": 0.02, "NB_DISCRIMINATOR_STEP": 1,
        "NB_GENERATOR_STEP": 1, "REAL_LABEL_SMOOTHING": False, "FAKE_LABEL_SMOOTHING": False,
        "LEARNING_RATE": 0.0005, "BETA1": 0.5, "BETA2": 0.999,
    }
    model = GANModel("CGAN", build_conditional_networks, bce_loss, conditional=True)
    trainer = AdversarialTrainer(model, *build_conditional_networks(hyperparameters, 1), hyperparameters, torch.device("cpu"))
    loader = BatchLoader(ImageSet(images, labels, ["dark", "bright"]), 32, torch.device("cpu"), seed=0)
    for _ in range(50):  # 50 epochs of 4 batches: 200 iterations
        for real_images, real_labels in loader:
            trainer.train_iteration(real_images, real_labels)

    latent = trainer.sample_latent(64)
    dark = trainer.generate(latent, torch.zeros(64, dtype=torch.long)).mean().item()
    bright = trainer.generate(latent, torch.ones(64, dtype=torch.long)).mean().item()
    assert bright - dark > 0.5, (dark, bright)


def test_spherical_path_stays_off_centre():
    start, end = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    middle = spherical_path(start, end, 3)[1]
    assert middle.norm().item() == pytest.approx(1.0)
    assert middle.norm().item() > torch.lerp(start, end, 0.5).norm().item()
    assert torch.allclose(spherical_path(start, start, 4), start.expand(4, 2))


def pixels(path):
    return np.asarray(Image.open(path).convert("L"), dtype=np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["DCGAN", "LSGAN"])
def test_generate_from_trained_checkpoint(repository, model):
    script = repository / model / f"{model}.py"
    run_script(script, *QUICK_RUN)
    generated = repository / model / "results_MNIST" / "generated"

    result = run_script(script, "--generate", "5", "--seed", "7")
    assert "seed 7" in result.stdout
    singles = sorted(generated.glob("sample_*.png"))
    assert [path.name for path in singles] == [f"sample_{index:03d}.png" for index in range(1, 6)]
    assert all(Image.open(path).size == (32, 32) for path in singles)
    assert pixels(generated / "grid.png").std() > 5
    first = pixels(singles[0])

    run_script(script, "--generate", "2", "--seed", "7")
    assert len(list(generated.glob("sample_*.png"))) == 2
    assert np.array_equal(pixels(generated / "sample_001.png"), first)
    earlier = [path for path in generated.parent.iterdir() if path.name.startswith("generated_")]
    assert len(earlier) == 1
    assert len(list(earlier[0].glob("sample_*.png"))) == 5

    run_script(script, "--interpolate", "--seed", "3")
    strip = Image.open(generated / "interpolation.png")
    assert strip.size == (10 * 34 + 2, 34 + 2)


@pytest.mark.slow
def test_cgan_trains_and_samples_per_class(repository):
    script = repository / "CGAN" / "CGAN.py"
    run_script(script, *QUICK_RUN)
    results = repository / "CGAN" / "results_MNIST"
    grid = Image.open(results / "gen_epoch_1.png")
    assert grid.height == 10 * 34 + 2
    assert grid.width > 4 * 34 + 2  # the class names sit left of the tiles

    run_script(script, "--generate", "3", "--seed", "1", "DATASET_NAME=MNIST")
    generated = results / "generated"
    assert len(list(generated.glob("class_*.png"))) == 30
    assert sorted(path.name for path in generated.glob("class_9_*.png")) == ["class_9_001.png", "class_9_002.png", "class_9_003.png"]

    run_script(script, "--generate", "2", "--label", "seven", "DATASET_NAME=MNIST")
    assert sorted(path.name for path in generated.glob("class_*.png")) == ["class_7_001.png", "class_7_002.png"]

    failed = run_script(script, "--generate", "2", "--label", "eleven", "DATASET_NAME=MNIST", expect_status=2)
    assert "invalid --label 'eleven': expected a class index from 0 to 9" in failed.stderr


@pytest.mark.slow
def test_sampling_errors_are_one_line(repository):
    dcgan = repository / "DCGAN" / "DCGAN.py"
    lsgan = repository / "LSGAN" / "LSGAN.py"

    missing = run_script(dcgan, "--generate", "4", expect_status=1)
    assert "no checkpoint at" in missing.stderr
    assert "train the model first, or pass --checkpoint PATH" in missing.stderr

    run_script(dcgan, *QUICK_RUN)
    checkpoint = repository / "DCGAN" / "results_MNIST" / "checkpoint.pt"
    foreign = run_script(lsgan, "--generate", "4", "--checkpoint", str(checkpoint), expect_status=1)
    assert "was written by DCGAN.py, not LSGAN.py; pass a LSGAN checkpoint with --checkpoint" in foreign.stderr

    resized = run_script(dcgan, "--generate", "4", "IMAGE_SIZE=64", expect_status=2)
    assert "was trained with IMAGE_SIZE=32, not the requested IMAGE_SIZE=64" in resized.stderr

    damaged = repository / "damaged.pt"
    damaged.write_bytes(b"not a checkpoint")
    unreadable = run_script(dcgan, "--generate", "4", "--checkpoint", str(damaged), expect_status=1)
    assert f"cannot load checkpoint {damaged}" in unreadable.stderr

    for result in (missing, foreign, resized, unreadable):
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().count("\n") == 0


def test_cgan_checks_number_of_labels(repository):
    result = run_script(repository / "CGAN" / "CGAN.py", "DATASET_NAME=MNIST", "NUMBER_LABELS=5", expect_status=2)
    assert "invalid hyperparameter NUMBER_LABELS=5: MNIST has 10 classes, so set NUMBER_LABELS=10" in result.stderr
