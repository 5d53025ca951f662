"""Sample-quality metrics: how far generated images lie from held-out test images in a feature space.

An Evaluator is built once per training run and measures the samples of a `generate` function:

- Fréchet distance (Heusel et al. 2017) and KID (Bińkowski et al. 2018), computed by torchmetrics;
- precision and recall (Kynkäänniemi et al. 2019) with k = 3 nearest neighbours;
- the distance of samples to their nearest training image, a check for memorised images;
- for the conditional GAN, the classifier's accuracy on samples of each requested class;
- the Fréchet distance in Inception-v3 features, when torchvision's weights are on disk.

The feature spaces are those of common/features.py. Reference lines bracket every distance:
the floor compares real training images with the test images, the ceiling an untrained
generator's samples.
"""

import hashlib
import math
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # render to files only, so plots work with no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from torch import nn  # noqa: E402
from torchmetrics.image.fid import FrechetInceptionDistance  # noqa: E402
from torchmetrics.image.kid import KernelInceptionDistance  # noqa: E402

from common.checkpoints import save_atomically  # noqa: E402
from common.classifier import CLASSIFIER_FOLDER, has_classifier, load_classifier  # noqa: E402
from common.data import ImageSet  # noqa: E402
from common.errors import ConfigError, UserError  # noqa: E402
from common.features import compute_features, feature_network_for, inception_weights_path, load_inception  # noqa: E402
from common.networks import Generator, initialise_weights  # noqa: E402
from common.runtime import seeded_random_state  # noqa: E402
from data.fetch import DATA_ROOT  # noqa: E402

DEFAULT_SAMPLE_COUNT = 10_000
SAMPLES_PER_CLASS = 1_000  # conditional GAN samples per class for the class accuracy
NEIGHBOURHOOD_SIZE = 3  # k of precision and recall, the value Kynkäänniemi et al. 2019 recommend
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1_000  # lowered to the sample count when fewer images are measured
NEAR_COPY_QUANTILE = 0.01  # a sample is a near copy when it is closer to a training image than 99% of test images are
GENERATION_BATCH_SIZE = 500
METRICS_SEED = 0
DISTANCE_CHUNK_ELEMENTS = 2**24  # entries of one block of a distance matrix: 64 MB of float32
REFERENCE_FOLDER = DATA_ROOT / "metrics"
REFERENCE_FORMAT = 1  # bump when a metric or the ceiling generator changes, so cached reference lines are recomputed
# The ceiling's untrained generator: DCGAN's defaults, sampled in evaluation mode as the training loops sample.
CEILING_LATENT_SIZE = 100
CEILING_COMPLEXITY = 32
CEILING_WEIGHTS_STD = 0.02
DISTRIBUTION_METRICS = ("frechet_distance", "kid", "kid_std", "precision", "recall")

_inception_skip_reported = False


class PrecomputedFeatures(nn.Module):
    """An identity network, so torchmetrics' FID and KID take features computed once for all metrics."""

    def __init__(self, feature_count: int):
        super().__init__()
        self.num_features = feature_count

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def frechet_distance(real_features: torch.Tensor, fake_features: torch.Tensor) -> float:
    """Return the Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017).

    ||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2)), in squared feature units. torchmetrics
    1.9.0 sums the features in float64 and takes the trace of the square root from eigenvalues.
    """
    # sync_on_compute=False: under torchrun only rank 0 measures, so the metric must not gather from the other ranks.
    metric = FrechetInceptionDistance(feature=PrecomputedFeatures(real_features.shape[1]), sync_on_compute=False)
    metric.update(real_features, real=True)
    metric.update(fake_features, real=False)
    return metric.compute().item()


def kernel_inception_distance(real_features: torch.Tensor, fake_features: torch.Tensor, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE) -> tuple[float, float]:
    """Return the mean and standard deviation of KID over random subsets (Bińkowski et al. 2018).

    KID is the unbiased squared maximum mean discrepancy under the kernel (x.y / d + 1)^3. The
    subsets are drawn under a fixed seed, so the value is repeatable and the global random stream
    is left alone. `subset_size` is lowered to the smaller set's size.
    """
    subset_size = min(subset_size, len(real_features), len(fake_features))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")  # the features are already in memory
        metric = KernelInceptionDistance(
            feature=PrecomputedFeatures(real_features.shape[1]), subsets=subsets, subset_size=subset_size, sync_on_compute=False
        )
    metric.update(real_features, real=True)
    metric.update(fake_features, real=False)
    with seeded_random_state(METRICS_SEED):
        mean, std = metric.compute()
    return mean.item(), std.item()


def chunk_rows(reference_count: int) -> int:
    """Return how many query rows of a distance matrix against `reference_count` vectors fit one block."""
    return max(1, DISTANCE_CHUNK_ELEMENTS // max(1, reference_count))


def kth_neighbour_distances(features: torch.Tensor, k: int = NEIGHBOURHOOD_SIZE) -> torch.Tensor:
    """Return each vector's Euclidean distance to its k-th nearest neighbour in the same set, itself excluded."""
    if len(features) <= k:
        raise ValueError(f"the k-th nearest neighbour needs more than k = {k} vectors, got {len(features)}")
    parts = [torch.cdist(chunk, features).kthvalue(k + 1, dim=1).values for chunk in features.split(chunk_rows(len(features)))]
    return torch.cat(parts)


def nearest_distances(queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Return each query's Euclidean distance to its nearest reference vector."""
    parts = [torch.cdist(chunk, references).min(dim=1).values for chunk in queries.split(chunk_rows(len(references)))]
    return torch.cat(parts)


def manifold_coverage(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> float:
    """Return the fraction of queries that lie in at least one ball around `centres` with the given `radii`."""
    parts = [(torch.cdist(chunk, centres) <= radii).any(dim=1) for chunk in queries.split(chunk_rows(len(centres)))]
    return torch.cat(parts).float().mean().item()


def precision_recall(real_features: torch.Tensor, fake_features: torch.Tensor, k: int = NEIGHBOURHOOD_SIZE, real_radii: torch.Tensor | None = None) -> tuple[float, float]:
    """Return the precision and recall of Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric for Assessing Generative Models".

    Each set's manifold is the union of balls around its feature vectors, each ball reaching to
    the vector's k-th nearest neighbour in its own set. Precision is the fraction of generated
    samples inside the real manifold (how realistic they are), recall the fraction of real
    images inside the generated manifold (how much of the data the samples cover).
    `real_radii` may pass the real set's k-th neighbour distances when they are already known.

    NOTE: in a digit classifier's features, flat or noisy images land near thin digits such as 1,
    so bad samples can reach a high precision (1.0 for the untrained ceiling on MNIST). Read it with recall.
    """
    if real_radii is None:
        real_radii = kth_neighbour_distances(real_features, k)
    fake_radii = kth_neighbour_distances(fake_features, k)
    precision = manifold_coverage(fake_features, real_features, real_radii)
    recall = manifold_coverage(real_features, fake_features, fake_radii)
    return precision, recall


def distribution_metrics(real_features: torch.Tensor, fake_features: torch.Tensor, real_radii: torch.Tensor | None = None) -> dict[str, float]:
    """Return the Fréchet distance, KID and its spread over subsets, precision and recall of two feature sets."""
    if not torch.isfinite(fake_features).all():
        return {name: math.nan for name in DISTRIBUTION_METRICS}
    kid, kid_std = kernel_inception_distance(real_features, fake_features)
    precision, recall = precision_recall(real_features, fake_features, real_radii=real_radii)
    return {"frechet_distance": frechet_distance(real_features, fake_features), "kid": kid, "kid_std": kid_std, "precision": precision, "recall": recall}


def class_accuracy(predictions: torch.Tensor, labels: torch.Tensor, class_count: int) -> tuple[float, torch.Tensor]:
    """Return the fraction of predictions equal to their labels, overall and per class (NaN for a class without labels)."""
    correct = (predictions == labels).double()
    totals = torch.bincount(labels, minlength=class_count).double()
    per_class = torch.bincount(labels, weights=correct, minlength=class_count) / totals
    return correct.mean().item(), per_class


def column_name(text: str) -> str:
    """Turn a class name into lowercase letters, digits and underscores, for a metrics.csv column ("T-shirt/top" -> "t_shirt_top")."""
    return "_".join("".join(character if character.isalnum() else " " for character in text.lower()).split())


def quantise(images: torch.Tensor) -> torch.Tensor:
    """Round images in [-1, 1] to the 256 levels of an 8-bit PNG, clamping values outside the range, as saved samples are."""
    return images.float().clamp(-1, 1).add(1).mul(127.5).round().div(127.5).sub(1)


def check_sample_count(value) -> int:
    """Return METRICS_SAMPLES when it is an integer large enough for k-nearest-neighbour radii, else raise a ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= NEIGHBOURHOOD_SIZE:
        raise ConfigError(f"invalid hyperparameter METRICS_SAMPLES={value!r}: expected an integer of at least {NEIGHBOURHOOD_SIZE + 1}, such as {DEFAULT_SAMPLE_COUNT}")
    return value


class Evaluator:
    """The sample-quality measurement of one training run, against the held-out test images of its dataset.

    Building it computes the features of the test and training images once, and the reference
    lines once per dataset (cached in `reference_folder`). MNIST and Fashion-MNIST use their
    classifier, built on first use in `classifier_folder`, and any other dataset the random
    feature network. Each call of `evaluate` or `evaluate_conditional` returns a flat dict of
    metrics ready to become metrics.csv columns; `describe` turns it into one printed line.
    """

    def __init__(
        self,
        hyperparameters: dict,
        device: torch.device,
        test_set: ImageSet,
        train_set: ImageSet,
        *,
        samples_per_class: int = SAMPLES_PER_CLASS,
        classifier_folder: Path = CLASSIFIER_FOLDER,
        data_root: Path = DATA_ROOT,
        reference_folder: Path = REFERENCE_FOLDER,
    ):
        self.dataset = hyperparameters["DATASET_NAME"]
        self.device = torch.device(device)
        self.sample_count = check_sample_count(hyperparameters.get("METRICS_SAMPLES", DEFAULT_SAMPLE_COUNT))
        self.samples_per_class = samples_per_class
        for name, image_set in (("test", test_set), ("training", train_set)):
            if len(image_set.images) <= NEIGHBOURHOOD_SIZE:
                raise UserError(
                    f"the {self.dataset} {name} split has {len(image_set.images)} image(s), too few to measure samples "
                    f"against: at least {NEIGHBOURHOOD_SIZE + 1} are needed; add images to the dataset, or set METRICS_SAMPLES=0"
                )
        self.image_shape = tuple(test_set.images.shape[1:])
        self.class_names = list(test_set.class_names)

        self.classifier = load_classifier(self.dataset, self.device, classifier_folder, data_root) if has_classifier(self.dataset) else None
        self.feature_network, self.feature_label = feature_network_for(self.image_shape[0], self.device, self.classifier)
        self.test_images = test_set.images[: self.sample_count]
        self.real_features = compute_features(self.feature_network, self.test_images, self.device)
        self.real_radii = kth_neighbour_distances(self.real_features)
        self.train_features = compute_features(self.feature_network, train_set.images, self.device)

        # Held-out test images show how close a new real image lies to the training set.
        test_nearest = nearest_distances(self.real_features, self.train_features)
        self.test_nearest_mean = test_nearest.mean().item()
        self.near_copy_threshold = torch.quantile(test_nearest, NEAR_COPY_QUANTILE).item()

        self.reference = self.load_reference_lines(train_set, reference_folder)
        self.inception = load_inception(self.device)
        self.inception_real_features = None
        self.report_setup()

    @property
    def floor(self) -> dict[str, float]:
        """The value of each metric for real images, drawn as a dashed line in metrics.png."""
        floor = {**self.reference["floor"], "nearest_train_distance": 1.0, "near_copy_fraction": NEAR_COPY_QUANTILE}
        if self.classifier is not None:
            floor["class_accuracy"] = self.classifier.test_accuracy
        return floor

    @property
    def ceiling(self) -> dict[str, float]:
        """The value of each distribution metric for an untrained generator's samples."""
        return self.reference["ceiling"]

    def evaluate(self, generate: Callable[[int], torch.Tensor], include_inception: bool = True) -> dict[str, float]:
        """Measure METRICS_SAMPLES images of `generate(count)`, which returns `count` images in [-1, 1] shaped like the dataset's.

        `generate` runs under a fixed seed inside no_grad, so every evaluation draws the same
        latent vectors and the training run's random stream is left as it was.
        NOTE: the Inception FID, computed when its weights are on disk, took 0.28 s an image on one
        CPU thread, so on a CPU pass include_inception=False for all but the last evaluation.
        """
        started = time.perf_counter()
        counts = [min(GENERATION_BATCH_SIZE, self.sample_count - start) for start in range(0, self.sample_count, GENERATION_BATCH_SIZE)]
        features, inception_features, _ = self.measure_samples((generate(count) for count in counts), include_inception, predict=False)
        metrics = self.sample_metrics(features, inception_features)
        metrics["evaluation_seconds"] = time.perf_counter() - started
        return metrics

    def evaluate_conditional(self, generate: Callable[[torch.Tensor], torch.Tensor], include_inception: bool = True) -> dict[str, float]:
        """Measure the samples of `generate(labels)`, which returns one image in [-1, 1] per class index in `labels`.

        Every class gets `samples_per_class` samples (more when METRICS_SAMPLES needs them). The
        classifier's accuracy on them is reported per class and overall, beside its accuracy on
        real test images. The distribution metrics use METRICS_SAMPLES of them, drawn at random.
        """
        started = time.perf_counter()
        class_count = len(self.class_names)
        per_class = max(self.samples_per_class, math.ceil(self.sample_count / class_count))
        labels = torch.arange(class_count).repeat_interleave(per_class)
        label_batches = labels.split(GENERATION_BATCH_SIZE)
        features, inception_features, predictions = self.measure_samples(
            (generate(batch.to(self.device)) for batch in label_batches), include_inception, predict=self.classifier is not None
        )

        chosen = torch.randperm(len(labels), generator=torch.Generator().manual_seed(METRICS_SEED))[: self.sample_count]
        metrics = self.sample_metrics(features[chosen], None if inception_features is None else inception_features[chosen])
        if predictions is not None:
            overall, per_class_accuracy = class_accuracy(predictions, labels, class_count)
            metrics["class_accuracy"] = overall
            metrics["real_class_accuracy"] = self.classifier.test_accuracy
            for name, accuracy in zip(self.class_names, per_class_accuracy.tolist()):
                metrics[f"class_accuracy_{column_name(name)}"] = accuracy
        metrics["evaluation_seconds"] = time.perf_counter() - started
        return metrics

    def measure_samples(self, batches: Iterable[torch.Tensor], include_inception: bool, predict: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Generate and measure batch by batch, so no more than one batch of images is held at a time.

        Return the features, the Inception features (or None) and the classifier's predictions (or None).
        """
        use_inception = include_inception and self.inception is not None
        features, inception_features, predictions = [], [], []
        with seeded_random_state(METRICS_SEED), torch.no_grad():
            for images in batches:
                if tuple(images.shape[1:]) != self.image_shape:
                    raise ValueError(f"generate returned images of shape {tuple(images.shape)}, expected N x {' x '.join(map(str, self.image_shape))}")
                images = quantise(images.to(self.device))
                features.append(self.feature_network(images).float().cpu())
                if use_inception:
                    inception_features.append(self.inception(images).float().cpu())
                if predict:
                    predictions.append(self.classifier.predict(images).cpu())
        return (
            torch.cat(features),
            torch.cat(inception_features) if use_inception else None,
            torch.cat(predictions) if predict else None,
        )

    def sample_metrics(self, features: torch.Tensor, inception_features: torch.Tensor | None) -> dict[str, float]:
        """Return the distribution metrics and the nearest-training-image check of the samples' features."""
        if not torch.isfinite(features).all():
            print("warning: some samples contain NaN or infinite pixels, so their metrics are NaN")
        metrics = distribution_metrics(self.real_features, features, self.real_radii)

        nearest = nearest_distances(features, self.train_features)
        if self.test_nearest_mean > 0:
            metrics["nearest_train_distance"] = nearest.mean().item() / self.test_nearest_mean
            metrics["near_copy_fraction"] = (nearest < self.near_copy_threshold).float().mean().item()
        else:  # the test images are training images too, so there is no scale to compare with
            metrics["nearest_train_distance"] = metrics["near_copy_fraction"] = math.nan

        if inception_features is not None:
            if self.inception_real_features is None:
                self.inception_real_features = compute_features(self.inception, self.test_images, self.device)
            finite = torch.isfinite(inception_features).all()
            metrics["inception_fid"] = frechet_distance(self.inception_real_features, inception_features) if finite else math.nan
        return metrics

    def describe(self, metrics: dict[str, float]) -> str:
        """Return one line that states the metrics of an evaluation and the feature space they were measured in."""
        parts = [
            f"Fréchet distance {metrics['frechet_distance']:.4g} (real images {self.floor['frechet_distance']:.3g})",
            f"KID {metrics['kid']:.4g}",
            f"precision {metrics['precision']:.3f}",
            f"recall {metrics['recall']:.3f}",
            f"nearest training image {metrics['nearest_train_distance']:.2f} x a test image's",
            f"near copies {metrics['near_copy_fraction']:.1%}",
        ]
        if "inception_fid" in metrics:
            parts.append(f"Inception FID {metrics['inception_fid']:.4g}")
        if "class_accuracy" in metrics:
            parts.append(f"class accuracy {metrics['class_accuracy']:.1%} (real images {metrics['real_class_accuracy']:.1%})")
        return f"metrics on {self.feature_label}, {self.sample_count:,} samples against {len(self.test_images):,} test images: " + ", ".join(parts)

    def report_setup(self) -> None:
        """Print the reference lines once, and once per process that the Inception FID is skipped."""
        global _inception_skip_reported
        floor, ceiling = self.reference["floor"], self.reference["ceiling"]
        print(
            f"metrics on {self.feature_label}: Fréchet distance of real training images {floor['frechet_distance']:.3g} (the floor), "
            f"of an untrained generator {ceiling['frechet_distance']:.3g} (the ceiling)"
        )
        if self.test_nearest_mean == 0:
            print("warning: the test images are training images too, so the nearest-training-image check gives NaN")
        if self.inception is None and not _inception_skip_reported:
            print(f"Inception FID skipped: torchvision's Inception-v3 weights are not in {inception_weights_path()} (nothing is downloaded)")
            _inception_skip_reported = True

    def load_reference_lines(self, train_set: ImageSet, folder: Path) -> dict[str, dict[str, float]]:
        """Return the floor and ceiling metrics, read from the cache or computed and cached.

        The cache file name contains the dataset, size, channels, feature network and sample count,
        and a hash of the test and training images and the feature network's weights, so a change
        to any of them computes the lines again.
        """
        channels, size = self.image_shape[0], self.image_shape[1]
        feature_kind = "classifier" if self.classifier is not None else "random"
        fingerprint = self.reference_fingerprint(train_set)
        path = Path(folder) / f"{self.dataset}_{size}px_{channels}ch_{feature_kind}_{self.sample_count}_{fingerprint}.pt"
        try:
            content = torch.load(path, map_location="cpu", weights_only=True)
            if content["format"] == REFERENCE_FORMAT:
                return {"floor": dict(content["floor"]), "ceiling": dict(content["ceiling"])}
        except FileNotFoundError:
            pass
        except Exception as error:  # noqa: BLE001 - a damaged cache file is computed again, whatever is wrong with it
            print(f"the cached reference lines {path} are damaged ({type(error).__name__}), so they are computed again")

        print(f"computing the metrics' reference lines for {self.dataset}, once")
        reference = {"floor": self.measure_training_images(train_set), "ceiling": self.measure_untrained_generator()}
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            save_atomically({"format": REFERENCE_FORMAT, **reference}, path)
        except (OSError, UserError) as error:
            print(f"warning: could not cache the metrics' reference lines, so the next run computes them again: {error}")
        return reference

    def reference_fingerprint(self, train_set: ImageSet) -> str:
        digest = hashlib.sha256(str(REFERENCE_FORMAT).encode())
        for tensor in (self.test_images, train_set.images, *self.feature_network.state_dict().values()):
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:12]

    def measure_training_images(self, train_set: ImageSet) -> dict[str, float]:
        """Return the distribution metrics of METRICS_SAMPLES training images drawn at random: the floor.

        NOTE: a training split smaller than METRICS_SAMPLES gives a floor measured on fewer images than
        the samples. The Fréchet distance grows as the count falls, so that floor sits a little high.
        """
        chosen = torch.randperm(len(train_set.images), generator=torch.Generator().manual_seed(METRICS_SEED))[: self.sample_count]
        features = self.train_features[chosen]
        return distribution_metrics(self.real_features, features, self.real_radii)

    def measure_untrained_generator(self) -> dict[str, float]:
        """Return the distribution metrics of METRICS_SAMPLES samples of an untrained DCGAN generator: the ceiling."""
        channels, size = self.image_shape[0], self.image_shape[1]
        with seeded_random_state(METRICS_SEED):
            generator = Generator(CEILING_LATENT_SIZE, channels, size, CEILING_COMPLEXITY)
            initialise_weights(generator, 0.0, CEILING_WEIGHTS_STD)
        generator.to(self.device).eval()
        counts = [min(GENERATION_BATCH_SIZE, self.sample_count - start) for start in range(0, self.sample_count, GENERATION_BATCH_SIZE)]
        batches = (generator(torch.randn(count, CEILING_LATENT_SIZE, device=self.device)) for count in counts)
        features, _, _ = self.measure_samples(batches, include_inception=False, predict=False)
        return distribution_metrics(self.real_features, features, self.real_radii)


# Panels of metrics.png: the metrics drawn together in each.
PLOT_PANELS = (
    ("frechet_distance",),
    ("kid",),
    ("precision", "recall"),
    ("nearest_train_distance",),
    ("near_copy_fraction",),
    ("class_accuracy",),
    ("inception_fid",),
)


def save_metrics_plot(history: list[dict], floor: dict[str, float], path: Path, title: str | None = None) -> None:
    """Draw each metric of `history` against epochs, with its value in `floor` as a dashed line.

    `history` has one dict per evaluation, with an "epoch" key and the metrics that
    `Evaluator.evaluate` returned (numbers or numeric strings, as read back from metrics.csv).
    """
    panels = [names for names in PLOT_PANELS if any(name in row for row in history for name in names)]
    if not panels:
        return
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure, axes_grid = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    for axes, names in zip(axes_grid.flat, panels):
        for index, name in enumerate(names):
            points = [(int(row["epoch"]), float(row[name])) for row in history if name in row]
            epochs, values = zip(*points) if points else ((), ())
            color = f"C{index}"
            axes.plot(epochs, values, marker="o", color=color, label=name)
            if name in floor:
                axes.axhline(floor[name], linestyle="--", linewidth=1, color=color, label=f"{name}, real images")
        axes.set(xlabel="epoch", title=" and ".join(names).replace("_", " "))
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    for axes in list(axes_grid.flat)[len(panels):]:
        axes.axis("off")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
