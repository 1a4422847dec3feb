"""Rule-tree recipes for a sparse classifier (``train.head_features`` > 0), chosen without
the test split: which faces the network is asked about and how the trees are grown, scored on
the SFEW val split's faces and their mirror images and on FER2013 public test.

The trees split only on the features the classifier reads, as the ``explain`` stage fits them
(:func:`ferops.rules.classifier_inputs`); fidelity is the stage's (per class, the tree's vote
against "network's argmax == class", averaged over the 7 classes).

    python benchmarks/sparse_rules.py     # → benchmarks/results/sparse_rules.json

(After ``dvc repro`` with ``train.head_features`` > 0: on a dense classifier the trees may split
on all 512 features, as ``benchmarks/rule_fidelity.py`` measures.)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import time
from pathlib import Path

import numpy as np

from ferops.config import load_section
from ferops.data import CLASSES, load_augmented, load_faces
from ferops.model import load_checkpoint
from ferops.rules import (
    RuleConfig,
    ask_network,
    classifier_inputs,
    fidelity,
    fit_tree,
    oracle_faces,
)

log = logging.getLogger("sparse_rules")

#: name → changes to params.yaml's ``explain`` section.
RECIPES: dict[str, dict] = {
    "shipped": {},
    "fer_all": {"fer2013_faces": 28709},
    "fer_none": {"fer2013_faces": 0},
    "entropy": {"criterion": "entropy"},
    "min_leaf_25": {"min_samples_leaf": 25},
    "fer_all_min_leaf_25": {"fer2013_faces": 28709, "min_samples_leaf": 25},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sparse_rules.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    base = RuleConfig.from_section(load_section("params.yaml", "explain"))
    model, meta = load_checkpoint(Path("models/model.pt"))
    columns = classifier_inputs(model)

    def ask(faces: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return ask_network(model, faces, meta["resize"], meta["input_size"], base.device)

    augmented, _, _ = load_augmented(Path("data/augmented"))
    with np.load("data/fer2013/fer2013.npz") as blob:
        fer_train, fer_public = blob["x_train"], list(blob["x_publictest"])
    val = load_faces(Path("data/split/split.csv"), Path("data/prepared/faces"), ["val"])[0]
    val += [np.ascontiguousarray(face[:, ::-1]) for face in val]
    checks = {"sfew_val_and_flips": ask(val), "fer2013_public_test": ask(fer_public)}
    # the network answers the largest oracle set once; smaller FER2013 subsets are its prefixes
    largest = dataclasses.replace(base, fer2013_faces=len(fer_train), flip=True)
    faces, sources = oracle_faces(augmented, fer_train, largest)
    x_all, p_all = ask(faces)
    sources = np.asarray(sources)
    rank = np.full(len(faces), -1)
    fer = np.flatnonzero(sources != "sfew_augmented")
    rank[fer] = np.concatenate([np.arange(len(fer_train))] * 2)  # original, then its mirror
    report = {
        "date": datetime.date.today().isoformat(),
        "model": "models/model.pt",
        "classifier_features": len(columns),
        "validation": {k: len(v[0]) for k, v in checks.items()},
        "recipes": {},
    }
    for name, changes in RECIPES.items():
        config = dataclasses.replace(base, **changes)
        keep = (sources == "sfew_augmented") | ((rank >= 0) & (rank < config.fer2013_faces))
        x_fit, p_fit = x_all[keep], p_all[keep]
        started = time.perf_counter()
        trees = [fit_tree(x_fit, p_fit == c, config, columns=columns) for c in range(len(CLASSES))]
        scores = {
            set_name: [fidelity(t, x, p == c) for c, t in enumerate(trees)]
            for set_name, (x, p) in {**checks, "fitted": (x_fit, p_fit)}.items()
        }
        report["recipes"][name] = {
            "explain_changes": changes,
            "fitted_on": int(keep.sum()),
            **{f"{k}_mean": round(float(np.mean(v)), 4) for k, v in scores.items()},
            **{k: [round(float(s), 4) for s in v] for k, v in scores.items() if k != "fitted"},
            "seconds": round(time.perf_counter() - started, 1),
        }
        log.info(
            "%s: %s",
            name,
            {k: v for k, v in report["recipes"][name].items() if k.endswith("_mean")},
        )
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
