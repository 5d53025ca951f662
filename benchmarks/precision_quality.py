"""Check that bf16 training reaches the quality of fp32 training: short DCGAN runs on MNIST in both precisions.

Usage, from the repository root:

    .venv/bin/python benchmarks/precision_quality.py            # 3 epochs on 20,000 digits, seeds 0 and 1 (about 5 minutes on 2 idle cores)
    .venv/bin/python benchmarks/precision_quality.py --quick    # 1 epoch on 1,280 digits, seed 0: checks that the script works

Each run is DCGAN.py itself, run as a user would, from a copy of the DCGAN folder in a temporary
repository that links to this one's common/ and data/. The script compares the final epoch's
mean losses of the precisions with the spread between seeds, and the Fréchet distance of the
final samples when the model scripts write a `frechet_distance` column to metrics.csv. It writes
summary.md and each run's last sample grid into the output folder.
"""

import argparse
import csv
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPARED_COLUMNS = ("discriminator_loss", "generator_loss", "frechet_distance")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="precision_quality.py", description="Train DCGAN on MNIST in fp32 and bf16 with the same seeds and compare the results.")
    parser.add_argument("--seeds", nargs="+", type=int, metavar="SEED", help="seeds of the runs (default: 0 1, or 0 with --quick)")
    parser.add_argument("--epochs", type=int, help="epochs per run (default: 3, or 1 with --quick)")
    parser.add_argument("--images", type=int, help="MNIST training images per epoch (default: 20000, or 1280 with --quick)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], metavar="P", help="PRECISION values to compare, the first as the baseline (default: fp32 bf16)")
    parser.add_argument("--quick", action="store_true", help="one short run per precision, to check that everything works")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "results_precision_quality", help="folder for summary.md and the grids (default: results_precision_quality/)")
    arguments = parser.parse_args(argv)
    quick = arguments.quick
    arguments.seeds = arguments.seeds or ([0] if quick else [0, 1])
    arguments.epochs = arguments.epochs or (1 if quick else 3)
    arguments.images = arguments.images or (1280 if quick else 20000)
    if arguments.epochs < 1 or arguments.images < 128:
        parser.error(f"invalid --epochs {arguments.epochs} or --images {arguments.images}: expected at least 1 epoch and 128 images")
    for precision in arguments.precisions:
        if precision not in ("auto", "fp32", "bf16"):
            parser.error(f"invalid precision {precision!r}: expected auto, fp32 or bf16")
    return arguments


def temporary_repository(folder: Path) -> Path:
    """Return a repository in `folder` with a copy of DCGAN/ and links to this repository's common/ and data/."""
    shutil.copytree(REPO_ROOT / "DCGAN", folder / "DCGAN", ignore=shutil.ignore_patterns("results_*", "__pycache__"))
    for name in ("common", "data"):
        (folder / name).symlink_to(REPO_ROOT / name, target_is_directory=True)
    return folder


def train(repository: Path, precision: str, seed: int, arguments: argparse.Namespace) -> list[dict]:
    """Run DCGAN.py once and return its metrics.csv rows; its results folder is renamed after the run."""
    overrides = [f"PRECISION={precision}", f"SEED={seed}", f"NB_EPOCH={arguments.epochs}", f"MAX_TRAIN_IMAGES={arguments.images}", "DATASET_NAME=MNIST"]
    print(f"training DCGAN with {' '.join(overrides)}", flush=True)
    script = repository / "DCGAN" / "DCGAN.py"
    completed = subprocess.run([sys.executable, script.name, *overrides], cwd=script.parent)
    if completed.returncode != 0:
        raise SystemExit(f"precision_quality.py: error: DCGAN.py {' '.join(overrides)} failed with exit status {completed.returncode} (its error is printed above)")
    results = script.parent / "results_MNIST"
    run_folder = results.rename(script.parent / f"run_{precision}_seed{seed}")
    with open(run_folder / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    grid = run_folder / f"gen_epoch_{arguments.epochs}.png"
    shutil.copy(grid, arguments.output / f"{precision}_seed{seed}_epoch{arguments.epochs}.png")
    return rows


def spread(values: list[float]) -> float:
    """Return max - min, the run-to-run spread of a few seeds (0 for a single run)."""
    return max(values) - min(values)


def summary_lines(finals: dict[str, dict[int, dict]], arguments: argparse.Namespace) -> list[str]:
    """Tabulate the final epoch's values per precision and seed, and compare each precision with the baseline."""
    columns = [column for column in COMPARED_COLUMNS if all(column in row for runs in finals.values() for row in runs.values())]
    lines = [
        f"DCGAN on the first {arguments.images} MNIST training digits, {arguments.epochs} epoch(s), seeds {', '.join(map(str, arguments.seeds))}; "
        "values of the last epoch.",
        "",
        "| precision | seed | " + " | ".join(columns) + " | images/s |",
        "|" + " --- |" * (len(columns) + 3),
    ]
    for precision, runs in finals.items():
        for seed, row in runs.items():
            lines.append(f"| {precision} | {seed} | " + " | ".join(f"{float(row[column]):.4f}" for column in columns) + f" | {float(row['images_per_second']):.0f} |")

    baseline_name = arguments.precisions[0]
    lines.append("")
    for column in columns:
        baseline = [float(row[column]) for row in finals[baseline_name].values()]
        for precision in arguments.precisions[1:]:
            values = [float(row[column]) for row in finals[precision].values()]
            difference = statistics.mean(values) - statistics.mean(baseline)
            lines.append(
                f"- {column}: mean {statistics.mean(values):.4f} in {precision} against {statistics.mean(baseline):.4f} in {baseline_name} "
                f"(difference {difference:+.4f}); spread between seeds {spread(baseline):.4f} in {baseline_name}, {spread(values):.4f} in {precision}"
            )
    if "frechet_distance" not in columns:
        lines.append("- Fréchet distance: not measured, because DCGAN.py writes no frechet_distance column to metrics.csv yet; compare the grids")
    return lines


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    try:
        arguments.output.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SystemExit(f"precision_quality.py: error: cannot create {arguments.output}: {error.strerror}; pass --output with a writable folder") from None
    finals: dict[str, dict[int, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="precision_quality_") as folder:
        repository = temporary_repository(Path(folder))
        for seed in arguments.seeds:
            for precision in arguments.precisions:
                finals.setdefault(precision, {})[seed] = train(repository, precision, seed, arguments)[-1]
    lines = summary_lines(finals, arguments)
    (arguments.output / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    print(f"\nwrote summary.md and the last grid of each run into {arguments.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
