"""Stage ``split``: usable face crops → train/val/test and k folds, grouped by clip."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ferops.config import load_section, setup_logging, write_json
from ferops.data import read_csv, write_csv
from ferops.prepare import USABLE
from ferops.splits import SplitConfig, assign_splits, split_metrics

log = logging.getLogger("split")

FIELDS = ["image_id", "label", "label_index", "movie", "clip", "crop", "split", "fold"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    args = parser.parse_args(argv)
    setup_logging()

    config = SplitConfig.from_section(load_section(args.params, "split"))
    rows = [r for r in read_csv(args.manifest) if r["status"] in USABLE]
    out = assign_splits(rows, config)
    write_csv(args.out, out, FIELDS)
    metrics = split_metrics(out, config.group_by)
    write_json(args.metrics, metrics)
    for name, part in metrics["splits"].items():
        log.info("%-5s %4d images %s", name, part["images"], part["per_class"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
