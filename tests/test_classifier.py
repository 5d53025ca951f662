"""The classifiers that measure samples of MNIST and Fashion-MNIST: accuracy, cache and input handling."""

import pytest
import torch

from common.classifier import RECIPES, check_accuracy, classifier_path, load_classifier, prepare_images, read_classifier
from common.data import convert_channels, load_images, resize, to_signed_float
from common.errors import UserError
from common.metrics import class_accuracy

CPU = torch.device("cpu")


@pytest.fixture(scope="module", params=["MNIST", "FASHIONMNIST"])
def classifier_build(request, mnist_classifier, fashion_mnist_classifier):
    # Both session fixtures are listed so that each dataset's classifier is built once, whatever the test order.
    return request.param, {"MNIST": mnist_classifier, "FASHIONMNIST": fashion_mnist_classifier}[request.param]


@pytest.fixture(scope="module")
def predictions_on_test_split(classifier_build):
    """The cached classifier, reloaded from its file, its predictions on the whole test split and the true labels."""
    dataset, build = classifier_build
    classifier = load_classifier(dataset, CPU, build.folder)
    test_set = load_images(dataset, 32, 1, train=False)
    return classifier, classifier.predict(to_signed_float(test_set.images)), test_set.labels


def test_classifier_reaches_bar(classifier_build, predictions_on_test_split):
    dataset, _ = classifier_build
    classifier, predictions, labels = predictions_on_test_split
    accuracy = (predictions == labels).double().mean().item()
    assert accuracy >= RECIPES[dataset].accuracy_bar
    assert accuracy == pytest.approx(classifier.test_accuracy, abs=1e-6)


def test_classifier_cache_loads_weights_only(classifier_build):
    dataset, build = classifier_build
    path = classifier_path(dataset, build.folder)
    content = torch.load(path, weights_only=True)
    assert content["dataset"] == dataset
    assert path.stat().st_size < 1_000_000  # a few hundred kB
    assert read_classifier(path, dataset) is not None
    assert not list(build.folder.glob("*.tmp"))


def test_classifier_build_keeps_random_state(classifier_build):
    _, build = classifier_build
    assert build.random_state_kept


def test_damaged_classifier_cache_rebuilt(mnist_classifier):
    assert "is damaged or outdated" in mnist_classifier.output
    assert "test accuracy" in mnist_classifier.output
    content = torch.load(classifier_path("MNIST", mnist_classifier.folder), weights_only=True)
    assert content["test_accuracy"] >= RECIPES["MNIST"].accuracy_bar


def test_cache_of_other_dataset_rejected(mnist_classifier, tmp_path):
    copied = tmp_path / "FASHIONMNIST_32px.pt"
    copied.write_bytes(classifier_path("MNIST", mnist_classifier.folder).read_bytes())
    assert read_classifier(copied, "FASHIONMNIST") is None


def test_accuracy_below_bar_rejected():
    check_accuracy("MNIST", 0.9901)
    with pytest.raises(UserError) as raised:
        check_accuracy("MNIST", 0.9876)
    message = str(raised.value)
    assert "MNIST" in message
    assert "98.76%" in message
    assert "99.0%" in message


def test_unknown_dataset_rejected(tmp_path):
    with pytest.raises(UserError, match="POKEMON"):
        load_classifier("POKEMON", CPU, tmp_path)
    assert not list(tmp_path.iterdir())


def test_colour_64px_predicted_as_grey_32px(mnist_classifier):
    classifier = load_classifier("MNIST", CPU, mnist_classifier.folder)
    grey = load_images("MNIST", 32, 1, train=False).images[:2000]
    colour = convert_channels(resize(grey, 64), 3)
    assert prepare_images(to_signed_float(colour)).shape == (2000, 1, 32, 32)
    grey_predictions = classifier.predict(to_signed_float(grey))
    colour_predictions = classifier.predict(to_signed_float(colour))
    assert (grey_predictions == colour_predictions).float().mean() > 0.99


def test_features_are_penultimate_activations(mnist_classifier):
    classifier = load_classifier("MNIST", CPU, mnist_classifier.folder)
    images = to_signed_float(load_images("MNIST", 32, 1, train=False).images[:300])
    features = classifier.features(images)
    assert features.shape == (300, classifier.network.num_features)
    assert torch.allclose(classifier.feature_extractor(images), features)
    logits = classifier.network.output(features)
    assert torch.equal(logits.argmax(1), classifier.predict(images))


def test_real_test_accuracy_equals_classifier_accuracy(predictions_on_test_split):
    classifier, predictions, labels = predictions_on_test_split
    overall, per_class = class_accuracy(predictions, labels, len(classifier.class_names))
    assert overall == pytest.approx(classifier.test_accuracy, abs=1e-6)
    counts = torch.bincount(labels, minlength=len(classifier.class_names)).double()
    assert (per_class * counts).sum().item() / counts.sum().item() == pytest.approx(overall, abs=1e-9)


def test_bad_image_shape_rejected():
    with pytest.raises(ValueError, match="N x 1 x H x W"):
        prepare_images(torch.zeros(2, 2, 32, 32))
