"""Stage ``prepare``: SFEW movie frames → principal-face crops, manifest, quarantine, metrics."""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

from ferops.config import load_section, setup_logging, write_json
from ferops.data import scan_frames, write_csv
from ferops.faces import YUNET_FILE
from ferops.prepare import MANIFEST_FIELDS, QUARANTINE_FIELDS, PrepareConfig, timed_prepare
from ferops.sheets import prepare_contact_sheet

log = logging.getLogger("prepare")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--raw", type=Path, required=True)
    parser.add_argument("--zoo", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--sheet", type=Path, required=True)
    args = parser.parse_args(argv)
    setup_logging()

    config = PrepareConfig.from_section(load_section(args.params, "prepare"))
    frames = scan_frames(args.raw)
    if args.out.exists():
        shutil.rmtree(args.out)  # stale crops from other settings must not survive
    crops = args.out / "faces"
    rows, quarantine, metrics = timed_prepare(
        frames, args.raw, crops, config, args.zoo / YUNET_FILE
    )
    write_csv(args.out / "manifest.csv", rows, MANIFEST_FIELDS)
    write_csv(args.out / "quarantine.csv", quarantine, QUARANTINE_FIELDS)
    write_json(args.metrics, metrics)
    prepare_contact_sheet(rows, args.raw, crops, args.sheet)
    log.info(
        "%d frames: face in %.1f%%, %d multi-face, %d quarantined, %d label conflicts, %.0f s",
        metrics["frames"],
        100 * metrics["detection_rate"],
        metrics["multi_face_frames"],
        metrics["quarantined"],
        metrics["label_conflicts"],
        metrics["seconds"],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
