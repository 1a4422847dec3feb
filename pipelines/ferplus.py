"""Stage ``ferplus``: FER+'s ten crowd votes joined onto the ``fer2013`` stage's faces (by file
path), row-aligned with its arrays, and how many faces each rule of :mod:`ferops.ferplus` keeps."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from ferops.config import setup_logging, write_json
from ferops.data import read_csv
from ferops.fer2013 import SPLITS
from ferops.ferplus import NO_LABEL, join_votes, majority_labels, read_votes, vote_targets

log = logging.getLogger("ferplus")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--votes", type=Path, required=True, help="FER+'s votes.csv")
    parser.add_argument("--fer2013", type=Path, required=True, help="the fer2013 stage's folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    args = parser.parse_args(argv)
    setup_logging()

    votes = read_votes(args.votes)
    manifest = read_csv(args.fer2013 / "manifest.csv")
    with np.load(args.fer2013 / "fer2013.npz") as blob:
        folder_labels = {split: blob[f"y_{split}"] for split in SPLITS}
    arrays, metrics = {}, {}
    for split in SPLITS:
        rows = sorted(
            (r for r in manifest if r["split"] == split and r["index"] != ""),
            key=lambda r: int(r["index"]),
        )
        joined = join_votes(votes, [r["path"] for r in rows], len(folder_labels[split]))
        arrays[f"votes_{split}"] = joined
        has_votes = joined.sum(1) > 0
        _, learns = vote_targets(joined)
        majority = majority_labels(joined)
        measured = majority != NO_LABEL
        top = joined.max(1, keepdims=True)
        ties = has_votes & ((joined == top).sum(1) > 1)
        metrics[split] = {
            "faces": len(joined),
            "with_votes": int(has_votes.sum()),
            "learn": int(learns.sum()),
            "majority": int(measured.sum()),
            "ties": int(ties.sum()),
            "other_majority": int((has_votes & ~ties & ~measured).sum()),
            "folder_label_agreement": round(
                float((majority[measured] == folder_labels[split][measured]).mean()), 4
            ),
        }
        log.info("%s: %s", split, metrics[split])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    write_json(args.metrics, metrics)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
