"""Stage ``evaluate``: test-split metrics (accuracy, per-class recall, …), confusion matrix and
misclassified faces as pictures, and the 512 penultimate features of every split as CSV."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from ferops.config import load_section, setup_logging, write_json
from ferops.data import CLASSES, load_faces, write_csv
from ferops.features import write_features
from ferops.metrics import EvaluateConfig, classification_metrics
from ferops.model import load_checkpoint
from ferops.plots import plot_confusion
from ferops.sheets import RED, grid, save, tile
from ferops.tracking import log_to_run
from ferops.training import FaceSet, predict

log = logging.getLogger("evaluate")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--crops", type=Path, required=True)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--plots", type=Path, required=True)
    args = parser.parse_args(argv)
    setup_logging()

    section = EvaluateConfig.from_section(load_section(args.params, "evaluate"))
    model, meta = load_checkpoint(args.model)
    images, labels, rows = load_faces(args.split, args.crops)
    data = FaceSet(images, labels, meta["resize"])
    logits, features = predict(model, data, meta["input_size"], device=section.device)
    predicted = logits.argmax(1)

    test = np.array([r["split"] == "test" for r in rows])
    metrics = classification_metrics(data.labels[test], predicted[test])
    val = np.array([r["split"] == "val" for r in rows])
    metrics["val_accuracy"] = (
        float((predicted[val] == data.labels[val]).mean()) if val.any() else 0.0
    )
    write_json(args.metrics, metrics)
    write_csv(
        args.plots / "predictions.csv",
        [
            {"image_id": r["image_id"], "actual": r["label"], "predicted": CLASSES[p]}
            for r, p, t in zip(rows, predicted, test, strict=True)
            if t
        ],
    )
    plot_confusion(metrics, args.plots / "confusion.png", f"test split ({meta['init']} init)")
    _misclassified_sheet(
        data,
        rows,
        predicted,
        test,
        args.plots / "misclassified.png",
        section.sheet_size,
    )

    write_features(args.features, rows, data.labels, predicted, features)

    log_to_run(
        args.run,
        {
            "test_accuracy": metrics["accuracy"],
            "test_macro_f1": metrics["macro_f1"],
            **{f"test_recall_{c}": v for c, v in metrics["recall"].items()},
        },
        folders={"plots/evaluate": args.plots},
        files={"metrics": args.metrics},
    )
    log.info(
        "test accuracy %.4f, macro-F1 %.4f, recall %s",
        metrics["accuracy"],
        metrics["macro_f1"],
        metrics["recall"],
    )
    return 0


def _misclassified_sheet(
    data: FaceSet,
    rows: list[dict],
    predicted: np.ndarray,
    test: np.ndarray,
    path: Path,
    limit: int,
) -> None:
    wrong = [i for i in np.flatnonzero(test) if predicted[i] != data.labels[i]][:limit]
    tiles = [
        tile(
            data.images[i],
            f"true {CLASSES[data.labels[i]]}\npred {CLASSES[predicted[i]]}",
            110,
            RED,
        )
        for i in wrong
    ]
    save(path, grid(tiles, columns=8, title=f"misclassified test faces ({len(wrong)} shown)"))


if __name__ == "__main__":
    raise SystemExit(main())
