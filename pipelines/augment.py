"""Stage ``augment``: the paper's offline flip / stretch / widen, for the training split only."""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import cv2
from tqdm import tqdm

from ferops.augment import AugmentConfig, augment_image
from ferops.config import load_section, setup_logging, write_json
from ferops.data import read_csv, write_augmented

log = logging.getLogger("augment")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--crops", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    args = parser.parse_args(argv)
    setup_logging()

    config = AugmentConfig.from_section(load_section(args.params, "augment"))
    train = [r for r in read_csv(args.split) if r["split"] == "train"]
    if args.out.exists():
        shutil.rmtree(args.out)
    rows, skipped = [], 0
    for row in tqdm(train, desc="augment", unit="img"):
        image = cv2.imread(str(args.crops / row["crop"]), cv2.IMREAD_GRAYSCALE)
        if image is None:
            tqdm.write(f"skipped {row['image_id']}: crop {row['crop']} is unreadable")
            skipped += 1
            continue
        stem = Path(row["crop"]).stem
        for op, version in augment_image(image, config).items():
            rel = f"{row['label']}/{stem}__{op}.png"
            (args.out / row["label"]).mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(args.out / rel), version):
                raise OSError(f"could not write {args.out / rel}")
            rows.append(
                {
                    "image_id": f"{row['image_id']}__{op}",
                    "source_id": row["image_id"],
                    "op": op,
                    "label": row["label"],
                    "label_index": row["label_index"],
                    "clip": row["clip"],
                    "path": rel,
                    "height": version.shape[0],
                    "width": version.shape[1],
                }
            )
    write_augmented(args.out, rows)
    write_json(
        args.metrics,
        {
            "sources": len(train) - skipped,
            "images": len(rows),
            "per_source": len(config.ops),
            "skipped": skipped,
        },
    )
    log.info("%d training crops -> %d images (%s)", len(train) - skipped, len(rows), config.ops)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
