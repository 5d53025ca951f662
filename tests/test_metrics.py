"""Sample-quality metrics on real MNIST and synthetic images: distances, precision and recall, the Evaluator and its plot."""

import math

import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import gaussian_blur

import common.metrics
from common.classifier import load_classifier
from common.data import ImageSet, load_images, to_signed_float
from common.errors import ConfigError, UserError
from common.features import RandomFeatures, compute_features, inception_weights_path
from common.metrics import (
    Evaluator,
    check_sample_count,
    column_name,
    frechet_distance,
    kernel_inception_distance,
    kth_neighbour_distances,
    precision_recall,
    quantise,
    save_metrics_plot,
)
from common.networks import Generator, initialise_weights

CPU = torch.device("cpu")
NOISE_LEVELS = (0.1, 0.2, 0.4, 0.8)  # standard deviations of Gaussian noise on the [-1, 1] scale
# KID draws random subsets, and in classifier features the effect of noise 0.1 on 2,000 digits is
# smaller than the spread this causes (the spread between two halves of the test split is as large).
KID_NOISE_LEVELS = NOISE_LEVELS[1:]
KID_SUBSETS = 25  # a quarter of the default, to keep the tests fast; the mean still separates every level
BLUR_SIGMAS = (0.6, 1.2, 2.4)  # standard deviations of Gaussian blur, in pixels


def disc_images(count: int, size: int, seed: int) -> torch.Tensor:
    """Draw `count` uint8 RGB images of one coloured disc on white, of random centre, radius and colour."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.rand(count, 2, generator=generator) * size * 0.5 + size * 0.25
    radii = (torch.rand(count, generator=generator) * 0.2 + 0.1) * size
    colours = torch.randint(0, 200, (count, 3, 1, 1), generator=generator, dtype=torch.uint8)
    rows, columns = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    inside = (rows - centres[:, 0, None, None]) ** 2 + (columns - centres[:, 1, None, None]) ** 2 <= radii[:, None, None] ** 2
    return torch.where(inside[:, None], colours, torch.tensor(255, dtype=torch.uint8))


def disc_set(count: int, size: int, seed: int) -> ImageSet:
    return ImageSet(disc_images(count, size, seed), torch.zeros(count, dtype=torch.int64), ["discs"])


def noised(images: torch.Tensor, std: float) -> torch.Tensor:
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(1)) * std
    return (images + noise).clamp(-1, 1)


def blurred(images: torch.Tensor, sigma: float) -> torch.Tensor:
    kernel_size = 2 * math.ceil(3 * sigma) + 1
    return gaussian_blur(images, [kernel_size, kernel_size], [sigma, sigma])


def batch_source(images: torch.Tensor):
    """Return a generate(count) function that hands out `images` in order, as a model's samples."""
    position = 0

    def generate(count: int) -> torch.Tensor:
        nonlocal position
        batch = images[position : position + count]
        position += count
        return batch

    return generate


@pytest.fixture(scope="module")
def mnist_test_images(mnist):
    return to_signed_float(load_images("MNIST", 32, 1, train=False).images[:2000])


@pytest.fixture(scope="module", params=["random", "classifier"])
def feature_network(request, mnist_classifier):
    if request.param == "random":
        return RandomFeatures(1)
    return load_classifier("MNIST", CPU, mnist_classifier.folder).feature_extractor


@pytest.fixture(scope="module")
def mnist_evaluator(mnist_classifier, tmp_path_factory):
    test_set = load_images("MNIST", 32, 1, train=False)
    train_set = load_images("MNIST", 32, 1, train=True)
    train_slice = ImageSet(train_set.images[:5000], train_set.labels[:5000], train_set.class_names)
    hyperparameters = {"DATASET_NAME": "MNIST", "METRICS_SAMPLES": 500}
    reference_folder = tmp_path_factory.mktemp("metrics")
    evaluator = Evaluator(hyperparameters, CPU, test_set, train_slice, classifier_folder=mnist_classifier.folder, reference_folder=reference_folder)
    return evaluator, test_set, train_slice, reference_folder


# Fréchet distance and KID


def test_frechet_distance_of_shift_is_squared_norm():
    features = torch.randn(400, 16, generator=torch.Generator().manual_seed(0))
    shift = torch.linspace(-1, 1, 16)
    assert frechet_distance(features, features + shift) == pytest.approx(shift.square().sum().item(), rel=1e-3)


def test_frechet_distance_of_scaling():
    features = torch.randn(400, 8, generator=torch.Generator().manual_seed(0)) + 2
    scale = 0.5
    # Covariance S against scale^2 S: the trace term is (1 - scale)^2 Tr(S); the means differ by (1 - scale) mu.
    expected = (1 - scale) ** 2 * (torch.cov(features.T).trace() + features.mean(0).square().sum())
    assert frechet_distance(features, features * scale) == pytest.approx(expected.item(), rel=1e-3)


def test_frechet_distance_of_set_itself_zero(mnist_test_images, feature_network):
    features = compute_features(feature_network, mnist_test_images, CPU)
    noisy = compute_features(feature_network, noised(mnist_test_images, NOISE_LEVELS[0]), CPU)
    assert abs(frechet_distance(features, features)) < 1e-4 * frechet_distance(features, noisy)


def test_frechet_distance_grows_with_noise(mnist_test_images, feature_network):
    features = compute_features(feature_network, mnist_test_images, CPU)
    distances = [frechet_distance(features, compute_features(feature_network, noised(mnist_test_images, std), CPU)) for std in NOISE_LEVELS]
    assert distances[0] > 0
    assert distances == sorted(distances)
    assert len(set(distances)) == len(distances)


def test_frechet_distance_grows_with_blur(mnist_test_images, feature_network):
    features = compute_features(feature_network, mnist_test_images, CPU)
    distances = [frechet_distance(features, compute_features(feature_network, blurred(mnist_test_images, sigma), CPU)) for sigma in BLUR_SIGMAS]
    assert distances[0] > 0
    assert distances == sorted(distances)
    assert len(set(distances)) == len(distances)


def test_kid_of_set_itself_near_zero(mnist_test_images, feature_network):
    features = compute_features(feature_network, mnist_test_images, CPU)
    noisy = compute_features(feature_network, noised(mnist_test_images, NOISE_LEVELS[2]), CPU)
    kid_itself, _ = kernel_inception_distance(features, features, subsets=KID_SUBSETS)
    kid_noisy, _ = kernel_inception_distance(features, noisy, subsets=KID_SUBSETS)
    # Not exactly 0: the real and fake subsets of a set against itself share images, whose self-similarity
    # enters the cross term of the unbiased estimate, which pulls it a little below 0.
    assert abs(kid_itself) < 0.1 * kid_noisy


def test_kid_grows_with_noise(mnist_test_images, feature_network):
    features = compute_features(feature_network, mnist_test_images, CPU)
    kids = [kernel_inception_distance(features, compute_features(feature_network, noised(mnist_test_images, std), CPU), subsets=KID_SUBSETS)[0] for std in KID_NOISE_LEVELS]
    assert kids[0] > 0
    assert kids == sorted(kids)


def test_kid_grows_with_blur(mnist_test_images, feature_network):
    features = compute_features(feature_network, mnist_test_images, CPU)
    kids = [kernel_inception_distance(features, compute_features(feature_network, blurred(mnist_test_images, sigma), CPU), subsets=KID_SUBSETS)[0] for sigma in BLUR_SIGMAS]
    assert kids[0] > 0
    assert kids == sorted(kids)


def test_kid_repeatable_and_keeps_random_state():
    features = torch.randn(300, 8, generator=torch.Generator().manual_seed(0))
    state = torch.get_rng_state()
    first = kernel_inception_distance(features, features + 0.3, subsets=10, subset_size=100)
    second = kernel_inception_distance(features, features + 0.3, subsets=10, subset_size=100)
    assert first == second
    assert torch.equal(torch.get_rng_state(), state)


# Precision and recall


def test_precision_recall_of_identical_sets():
    features = torch.randn(500, 8, generator=torch.Generator().manual_seed(0))
    assert precision_recall(features, features) == (1.0, 1.0)


def test_precision_recall_of_disjoint_sets():
    features = torch.randn(500, 8, generator=torch.Generator().manual_seed(0))
    assert precision_recall(features, features + 100) == (0.0, 0.0)


def test_dropped_mode_lowers_recall_only():
    generator = torch.Generator().manual_seed(0)
    offset = torch.zeros(8)
    offset[0] = 20

    def two_modes() -> torch.Tensor:
        return torch.cat([torch.randn(500, 8, generator=generator), torch.randn(500, 8, generator=generator) + offset])

    real = two_modes()
    both_precision, both_recall = precision_recall(real, two_modes())
    one_precision, one_recall = precision_recall(real, torch.randn(1000, 8, generator=generator))  # the first mode only
    assert both_precision > 0.8
    assert both_recall > 0.8
    assert one_precision > 0.9 * both_precision
    assert one_recall < 0.6 * both_recall


def test_kth_neighbour_matches_brute_force():
    features = torch.randn(60, 5, generator=torch.Generator().manual_seed(0))
    distances = torch.cdist(features, features)
    distances.fill_diagonal_(math.inf)
    expected = distances.sort(dim=1).values[:, 2]  # the third nearest other vector
    assert torch.allclose(kth_neighbour_distances(features, 3), expected, atol=1e-5)


# Random features


def test_random_features_identical_across_instances():
    images = to_signed_float(disc_images(16, 32, seed=0))
    assert torch.equal(RandomFeatures(3)(images), RandomFeatures(3)(images))
    assert RandomFeatures(3)(images).shape == (16, 256)
    assert RandomFeatures(3)(to_signed_float(disc_images(4, 64, seed=0))).shape == (4, 256)


def test_random_features_keep_random_state():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    RandomFeatures(3)
    assert torch.equal(torch.rand(3), expected)


# The Evaluator on MNIST


def test_test_images_score_as_real(mnist_evaluator):
    evaluator, test_set, _, _ = mnist_evaluator
    metrics = evaluator.evaluate(batch_source(to_signed_float(test_set.images[:500])))
    assert abs(metrics["frechet_distance"]) < 1e-3 * evaluator.floor["frechet_distance"]
    assert metrics["precision"] == 1.0
    assert metrics["recall"] == 1.0
    assert metrics["nearest_train_distance"] == pytest.approx(1.0, abs=1e-5)
    assert metrics["near_copy_fraction"] == pytest.approx(0.01, abs=0.005)


def test_training_images_flagged_as_copies(mnist_evaluator):
    evaluator, _, train_slice, _ = mnist_evaluator
    metrics = evaluator.evaluate(batch_source(to_signed_float(train_slice.images[1000:1500])))
    assert metrics["near_copy_fraction"] == 1.0
    assert metrics["nearest_train_distance"] < 0.01


def test_untrained_generator_far_above_floor(mnist_evaluator):
    evaluator, _, _, _ = mnist_evaluator
    generator = Generator(100, 1, 32, 8)
    initialise_weights(generator, 0.0, 0.02)

    def generate(count: int) -> torch.Tensor:
        return generator(torch.randn(count, 100))

    state = torch.get_rng_state()
    first = evaluator.evaluate(generate)
    assert torch.equal(torch.get_rng_state(), state)
    second = evaluator.evaluate(generate)
    assert first["frechet_distance"] > 20 * evaluator.floor["frechet_distance"]
    assert first["kid"] > 5 * evaluator.floor["kid"]
    assert first["recall"] < 0.1
    assert {name: value for name, value in first.items() if name != "evaluation_seconds"} == {
        name: value for name, value in second.items() if name != "evaluation_seconds"
    }
    assert "MNIST classifier features" in evaluator.describe(first)


def test_reference_lines_cached(mnist_evaluator, mnist_classifier, capsys):
    evaluator, test_set, train_slice, reference_folder = mnist_evaluator
    assert evaluator.ceiling["frechet_distance"] > 20 * evaluator.floor["frechet_distance"]
    assert len(list(reference_folder.glob("MNIST_32px_1ch_classifier_500_*.pt"))) == 1
    capsys.readouterr()
    hyperparameters = {"DATASET_NAME": "MNIST", "METRICS_SAMPLES": 500}
    again = Evaluator(hyperparameters, CPU, test_set, train_slice, classifier_folder=mnist_classifier.folder, reference_folder=reference_folder)
    assert "computing the metrics' reference lines" not in capsys.readouterr().out
    assert again.floor == evaluator.floor


def test_nan_samples_give_nan_metrics(mnist_evaluator, capsys):
    evaluator, _, _, _ = mnist_evaluator
    metrics = evaluator.evaluate(lambda count: torch.full((count, 1, 32, 32), math.nan))
    assert math.isnan(metrics["frechet_distance"])
    assert math.isnan(metrics["precision"])
    assert "NaN or infinite pixels" in capsys.readouterr().out


def test_wrong_sample_shape_rejected(mnist_evaluator):
    evaluator, _, _, _ = mnist_evaluator
    with pytest.raises(ValueError, match="expected N x 1 x 32 x 32"):
        evaluator.evaluate(lambda count: torch.zeros(count, 3, 32, 32))


def test_conditional_accuracy_of_real_images(mnist_evaluator, monkeypatch):
    evaluator, test_set, _, _ = mnist_evaluator
    per_class = 50
    monkeypatch.setattr(evaluator, "samples_per_class", per_class)
    # The first 50 test images of each class, in the order the evaluator requests the classes.
    chosen = torch.cat([(test_set.labels == label).nonzero().view(-1)[:per_class] for label in range(10)])
    images, labels = to_signed_float(test_set.images[chosen]), test_set.labels[chosen]
    position = 0

    def generate(requested: torch.Tensor) -> torch.Tensor:
        nonlocal position
        assert torch.equal(requested, labels[position : position + len(requested)])
        batch = images[position : position + len(requested)]
        position += len(requested)
        return batch

    metrics = evaluator.evaluate_conditional(generate)
    predictions = evaluator.classifier.predict(images)
    expected = (predictions == labels).view(10, per_class).double().mean(1)
    for label, name in enumerate(test_set.class_names):
        assert metrics[f"class_accuracy_{column_name(name)}"] == pytest.approx(expected[label].item())
    assert metrics["class_accuracy"] == pytest.approx(expected.mean().item())
    assert metrics["real_class_accuracy"] == evaluator.classifier.test_accuracy
    assert abs(metrics["class_accuracy"] - evaluator.classifier.test_accuracy) < 0.03


# The Evaluator on unlabelled images


def test_random_features_on_unlabelled_images(tmp_path):
    test_set, train_set = disc_set(200, 64, seed=1), disc_set(600, 64, seed=2)
    state = torch.get_rng_state()
    evaluator = Evaluator({"DATASET_NAME": "FOLDER", "METRICS_SAMPLES": 200}, CPU, test_set, train_set, reference_folder=tmp_path)
    assert torch.equal(torch.get_rng_state(), state)
    like_data = evaluator.evaluate(batch_source(to_signed_float(disc_images(200, 64, seed=3))))
    noise = evaluator.evaluate(lambda count: torch.rand(count, 3, 64, 64) * 2 - 1)
    copies = evaluator.evaluate(batch_source(to_signed_float(train_set.images[:200])))
    assert like_data["frechet_distance"] < 3 * evaluator.floor["frechet_distance"]
    assert noise["frechet_distance"] > 10 * like_data["frechet_distance"]
    assert like_data["near_copy_fraction"] < 0.1
    assert copies["near_copy_fraction"] == 1.0
    assert "comparable only within this project" in evaluator.describe(like_data)
    assert "class_accuracy" not in evaluator.evaluate_conditional(lambda labels: to_signed_float(disc_images(len(labels), 64, seed=4)))


def test_inception_skip_reported_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(common.metrics, "_inception_skip_reported", False)
    test_set, train_set = disc_set(20, 32, seed=1), disc_set(40, 32, seed=2)
    for _ in range(2):
        evaluator = Evaluator({"DATASET_NAME": "FOLDER", "METRICS_SAMPLES": 20}, CPU, test_set, train_set, reference_folder=tmp_path)
    assert capsys.readouterr().out.count("Inception FID skipped") == 1
    assert "inception_fid" not in evaluator.evaluate(batch_source(to_signed_float(test_set.images)))


def test_inception_fid_with_weights_on_disk(tmp_path, monkeypatch):
    from torchvision.models import inception_v3

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = inception_weights_path()
    assert weights.is_relative_to(tmp_path)
    weights.parent.mkdir(parents=True)
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=True).state_dict(), weights)  # random weights: tests never download

    test_set, train_set = disc_set(4, 32, seed=1), disc_set(8, 32, seed=2)
    evaluator = Evaluator({"DATASET_NAME": "FOLDER", "METRICS_SAMPLES": 4}, CPU, test_set, train_set, reference_folder=tmp_path)
    noise = evaluator.evaluate(lambda count: torch.rand(count, 3, 32, 32) * 2 - 1)
    assert noise["inception_fid"] > 0
    assert "Inception FID" in evaluator.describe(noise)
    assert "inception_fid" not in evaluator.evaluate(lambda count: torch.rand(count, 3, 32, 32), include_inception=False)


# Input checks and helpers


@pytest.mark.parametrize("value", [3, 0, "1000", True, 2.5, None])
def test_invalid_sample_count_rejected(value):
    with pytest.raises(ConfigError, match="METRICS_SAMPLES"):
        check_sample_count(value)


def test_tiny_test_split_rejected(tmp_path):
    with pytest.raises(UserError, match="test split has 3 image"):
        Evaluator({"DATASET_NAME": "FOLDER", "METRICS_SAMPLES": 20}, CPU, disc_set(3, 32, seed=1), disc_set(40, 32, seed=2), reference_folder=tmp_path)


def test_column_names():
    assert column_name("T-shirt/top") == "t_shirt_top"
    assert column_name("0 - zero") == "0_zero"
    assert column_name("Ankle boot") == "ankle_boot"


def test_quantise_rounds_and_clamps():
    images = torch.tensor([-3.0, -1.0, 0.0, 0.001, 1.0, 2.0])
    levels = (quantise(images) + 1) * 127.5
    assert torch.allclose(levels, torch.tensor([0.0, 0.0, 128.0, 128.0, 255.0, 255.0]))


def test_metrics_plot_from_csv_strings(tmp_path):
    history = [
        {"epoch": "1", "frechet_distance": "40.5", "kid": "0.9", "precision": "0.2", "recall": "0.1"},
        {"epoch": "3", "frechet_distance": "12.0", "kid": "0.3", "precision": "0.6", "recall": "0.4", "class_accuracy": "0.8"},
    ]
    save_metrics_plot(history, {"frechet_distance": 1.5, "class_accuracy": 0.99}, tmp_path / "metrics.png", title="MNIST classifier features")
    with Image.open(tmp_path / "metrics.png") as image:
        assert image.format == "PNG"
        assert image.width > image.height  # 4 panels: 3 columns on 2 rows


def test_metrics_plot_without_metrics_writes_nothing(tmp_path):
    save_metrics_plot([{"epoch": 1, "generator_loss": 0.7}], {}, tmp_path / "metrics.png")
    assert not (tmp_path / "metrics.png").exists()
