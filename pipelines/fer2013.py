"""Stage ``fer2013``: FER2013 train / public-test faces → arrays and a manifest for
pre-training."""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from pathlib import Path

import numpy as np

from ferops.config import load_section, setup_logging, write_json
from ferops.data import CLASSES, write_csv
from ferops.faces import YUNET_FILE, FaceConfig, FaceDetector
from ferops.fer2013 import SPLITS, Fer2013Config, load_split

log = logging.getLogger("fer2013")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--raw", type=Path, required=True)
    parser.add_argument("--zoo", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    args = parser.parse_args(argv)
    setup_logging()

    size = Fer2013Config.from_section(load_section(args.params, "fer2013")).size
    faces = FaceConfig.from_section(load_section(args.params, "prepare").get("faces", {}))
    detector = FaceDetector(faces, args.zoo / YUNET_FILE) if faces.align else None
    arrays, rows, metrics = {}, [], {}
    for split in SPLITS:
        images, labels, split_rows = load_split(args.raw, split, size, detector)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = images, labels
        rows += split_rows
        counts = Counter(int(y) for y in labels)
        metrics[split] = {
            "images": len(labels),
            "quarantined": sum(1 for r in split_rows if r["status"] == "quarantined"),
            "resized": sum(1 for r in split_rows if r["status"] == "resized"),
            "unaligned": sum(1 for r in split_rows if r["status"] == "unaligned"),
            "per_class": {c: counts.get(i, 0) for i, c in enumerate(CLASSES)},
        }
        log.info("%s: %d faces", split, len(labels))
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / "fer2013.npz", **arrays)
    write_csv(
        args.out / "manifest.csv", rows, ["split", "path", "label", "status", "reason", "index"]
    )
    write_json(args.metrics, metrics)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
