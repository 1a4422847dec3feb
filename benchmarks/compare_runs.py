"""Compare two pipeline runs by the selection protocol: SFEW grouped CV paired fold by fold
(same folds, same seeds; :func:`ferops.crossval.paired_difference`) and the FER+ public-test
figures (pre-training, fold networks, the served crop path). Reads two folders of
``metrics/*.json`` (a committed run's: ``git show REV:metrics/crossval.json`` etc.) and writes
one JSON report; the SFEW test split is copied for the record, never used to decide.

    python benchmarks/compare_runs.py --baseline OLD/metrics --candidate metrics \\
        --out benchmarks/results/ferplus_recipe.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
from pathlib import Path
from typing import Any

from ferops.crossval import paired_difference

log = logging.getLogger("compare_runs")

#: (file, key path) of the figures reported for each run; missing ones are reported as None.
FIGURES: dict[str, tuple[str, ...]] = {
    "crossval_mean": ("crossval", "accuracy_mean"),
    "crossval_std": ("crossval", "accuracy_std"),
    "crossval_ferplus": ("crossval", "ferplus_publictest_accuracy_mean"),
    "pretrain_val_acc": ("pretrain", "val_acc"),
    "pretrain_fer2013_label_acc": ("pretrain", "fer2013_label_acc"),
    "train_ferplus": ("train", "ferplus_publictest_acc"),
    "served_ferplus_crop": ("served", "ferplus_publictest_crop_accuracy"),
    "served_fer2013_crop": ("served", "fer2013_publictest_crop_accuracy"),
    "test_accuracy_release_only": ("evaluate", "accuracy"),
}


def _figures(folder: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, (stage, *keys) in FIGURES.items():
        path = folder / f"{stage}.json"
        value: Any = json.loads(path.read_text()) if path.exists() else None
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        out[name] = value
    return out


def compare(baseline: Path, candidate: Path, max_cv_loss: float, min_ferplus_gain: float):
    """The protocol's report: both runs' figures, the paired CV difference and the verdict (the
    candidate ships if its CV loses at most ``max_cv_loss`` and its served FER+ figure gains at
    least ``min_ferplus_gain``)."""
    folds = [
        [f["accuracy"] for f in json.loads((d / "crossval.json").read_text())["folds"]]
        for d in (candidate, baseline)
    ]
    paired = paired_difference(*folds)
    runs = {"baseline": _figures(baseline), "candidate": _figures(candidate)}
    gain = None
    if None not in (
        runs["candidate"]["served_ferplus_crop"],
        runs["baseline"]["served_ferplus_crop"],
    ):
        gain = runs["candidate"]["served_ferplus_crop"] - runs["baseline"]["served_ferplus_crop"]
    ships = paired["mean"] >= -max_cv_loss and gain is not None and gain >= min_ferplus_gain
    return {
        "date": datetime.date.today().isoformat(),
        "rule": f"ships if CV loses <= {max_cv_loss} (paired) and served FER+ gains >= "
        f"{min_ferplus_gain}",
        "runs": runs,
        "folds": {"candidate": folds[0], "baseline": folds[1]},
        "cv_paired": paired,
        "served_ferplus_gain": None if gain is None else round(gain, 4),
        "ships": bool(ships),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="folder of metrics/*.json")
    parser.add_argument("--candidate", type=Path, required=True, help="folder of metrics/*.json")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-cv-loss", type=float, default=0.01)
    parser.add_argument("--min-ferplus-gain", type=float, default=0.01)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    report = compare(args.baseline, args.candidate, args.max_cv_loss, args.min_ferplus_gain)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    log.info(
        "CV paired %s; served FER+ gain %s; ships %s",
        report["cv_paired"],
        report["served_ferplus_gain"],
        report["ships"],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
