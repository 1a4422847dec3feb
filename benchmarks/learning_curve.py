"""Learning curve of the shipped recipe: grouped k-fold accuracy when fine-tuning on a fraction
of the training clips (the held-out fold is always whole). Answers "is SFEW accuracy bound by
the number of training faces?" and extrapolates how many faces a target accuracy would need.

    python benchmarks/learning_curve.py --fractions 0.125 0.25 0.5 --full metrics/crossval.json

Same data, params (``train``, ``augment``), pre-trained start and per-fold seeds as the
``crossval`` stage, so the 1.0 point repeats ``metrics/crossval.json`` (``--full`` takes it
from there instead of training it again). Writes
benchmarks/results/learning_curve.json. Run it alone on the CPU (after ``dvc repro``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ferops.config import setup_logging
from ferops.crossval import load_fold_inputs, run_fold

log = logging.getLogger("learning_curve")


def clip_subset(clips: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Mask of the rows whose clip is among a random ``fraction`` of the distinct clips."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    unique = np.unique(clips)
    keep = np.random.default_rng(seed).permutation(unique)[: max(1, round(fraction * len(unique)))]
    return np.isin(clips, keep)


def fit_line(faces: np.ndarray, accuracy: np.ndarray) -> tuple[float, float]:
    """Least-squares ``accuracy = a + b·log2(faces)``: (a, b), b = gain per doubling."""
    b, a = np.polyfit(np.log2(faces), accuracy, 1)
    return float(a), float(b)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--split", type=Path, default=Path("data/split/split.csv"))
    parser.add_argument("--crops", type=Path, default=Path("data/prepared/faces"))
    parser.add_argument("--pretrained", type=Path, default=Path("models/pretrain.pt"))
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument(
        "--full",
        type=Path,
        default=None,
        help="the crossval stage's metrics, used as the 1.0 point",
    )
    parser.add_argument("--target", type=float, default=0.60)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/learning_curve.json"))
    args = parser.parse_args(argv)
    setup_logging()

    data = load_fold_inputs(
        args.params,
        args.split,
        args.crops,
        args.pretrained,
        Path("data/fer2013/fer2013.npz"),
        Path("data/ferplus/votes.npz"),
        [Path("data/teacher/fer2013.npz"), Path("data/teacher/sfew.npz")],
    )
    config, folds = data.config, data.folds
    clips = np.array([r["clip"] for r in data.rows])

    points = []
    for fraction in sorted(args.fractions):
        accuracies, faces, start = [], [], time.perf_counter()
        for fold in tqdm(sorted(set(folds.tolist())), desc=f"fraction {fraction}", unit="fold"):
            held = folds == fold
            chosen = np.zeros(len(data.rows), dtype=bool)
            chosen[~held] = clip_subset(clips[~held], fraction, config.seed + fold)
            metrics, _ = run_fold(
                data.images,
                data.labels,
                chosen,
                held,
                config,
                data.augment,
                data.start_state,
                seed=config.seed + fold,
                desc=f"{fraction} fold {fold}",
                soft=data.soft,
                extra=data.extra,
            )
            accuracies.append(metrics["accuracy"])
            faces.append(int(chosen.sum()))
        point = {
            "fraction": fraction,
            "train_faces_mean": float(np.mean(faces)),
            "fold_accuracy": [round(a, 4) for a in accuracies],
            "accuracy_mean": round(float(np.mean(accuracies)), 4),
            "accuracy_std": round(float(np.std(accuracies, ddof=1)), 4),
            "seconds": round(time.perf_counter() - start, 1),
        }
        log.info(
            "fraction %.2f: %.1f faces, accuracy %.4f ± %.4f",
            fraction,
            point["train_faces_mean"],
            point["accuracy_mean"],
            point["accuracy_std"],
        )
        points.append(point)

    if args.full is not None:
        stage = json.loads(args.full.read_text())
        accuracies = [f["accuracy"] for f in stage["folds"]]
        points.append(
            {
                "fraction": 1.0,
                "from": str(args.full),
                "train_faces_mean": float(
                    np.mean([(folds != f["fold"]).sum() for f in stage["folds"]])
                ),
                "fold_accuracy": [round(a, 4) for a in accuracies],
                "accuracy_mean": stage["accuracy_mean"],
                "accuracy_std": stage["accuracy_std"],
            }
        )
    result: dict = {"init": data.init, "config": config.to_dict(), "points": points}
    if len(points) >= 2:
        a, b = fit_line(
            np.array([p["train_faces_mean"] for p in points]),
            np.array([p["accuracy_mean"] for p in points]),
        )
        result["fit"] = {"intercept": round(a, 4), "gain_per_doubling": round(b, 4)}
        if b > 0:
            result["fit"]["faces_for_target"] = round(2 ** ((args.target - a) / b))
            result["fit"]["target"] = args.target
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log.info("wrote %s: %s", args.out, result.get("fit"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
