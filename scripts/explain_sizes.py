"""What fitting size buys: held-out fidelity of the depth-limited rule trees fitted on the SFEW
training features only (before TREPAN) and on the network's answers for growing fitting sets.

    python scripts/explain_sizes.py --model models/model.pt --augmented data/augmented \
        --fer2013 data/fer2013/fer2013.npz --features data/features/features.csv \
        --sizes 0 2500 5000 10000 --out metrics/explain_sizes.json
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ferops.config import load_section, setup_logging, write_json
from ferops.data import CLASSES, load_augmented
from ferops.features import read_features
from ferops.model import load_checkpoint
from ferops.rules import RuleConfig, ask_network, fidelity, fit_tree, oracle_faces

log = logging.getLogger("explain_sizes")


def scores(
    x_fit: np.ndarray,
    p_fit: np.ndarray,
    x_test: np.ndarray,
    p_test: np.ndarray,
    config: RuleConfig,
) -> dict[str, float]:
    """Held-out fidelity per class and their mean, trees fitted at ``config.max_depth``."""
    out = {
        c: fidelity(fit_tree(x_fit, p_fit == i, config), x_test, p_test == i)
        for i, c in enumerate(CLASSES)
    }
    out["mean"] = float(np.mean(list(out.values())))
    return {k: round(v, 4) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", type=Path, default=Path("models/model.pt"))
    parser.add_argument("--augmented", type=Path, default=Path("data/augmented"))
    parser.add_argument("--fer2013", type=Path, default=Path("data/fer2013/fer2013.npz"))
    parser.add_argument("--features", type=Path, default=Path("data/features/features.csv"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 2500, 5000, 10000])
    parser.add_argument("--out", type=Path, default=Path("metrics/explain_sizes.json"))
    args = parser.parse_args(argv)
    setup_logging()

    config = RuleConfig.from_section(load_section(args.params, "explain"))
    splits = read_features(args.features)
    x_test, p_test = splits["test"]
    results = [
        {
            "fitted_on": "SFEW train features (before)",
            "faces": len(splits["train"][0]),
            "fidelity_test": scores(*splits["train"], x_test, p_test, config),
        }
    ]
    log.info("%s", results[-1])

    # Ask once for the largest set: a smaller one is the same FER2013 faces' prefix (oracle_faces).
    model, meta = load_checkpoint(args.model)
    augmented, _, _ = load_augmented(args.augmented)
    with np.load(args.fer2013) as blob:
        fer2013 = blob["x_train"]
    largest = dataclasses.replace(config, fer2013_faces=max(args.sizes))
    faces, sources = oracle_faces(augmented, fer2013, largest)
    started = time.perf_counter()
    x_all, p_all = ask_network(model, faces, meta["resize"], meta["input_size"], config.device)
    seconds = time.perf_counter() - started
    log.info("asked the network about %d faces in %.0f s", len(faces), seconds)
    sources = np.array(sources)
    rank = np.zeros(len(faces), dtype=np.int64)  # position within its own source
    for source in np.unique(sources):
        rank[sources == source] = np.arange((sources == source).sum())
    for size in args.sizes:
        keep = (sources == "sfew_augmented") | (rank < size)
        started = time.perf_counter()
        name = f"augmented SFEW + {size} FER2013" + (" + flips" if config.flip else "")
        results.append(
            {
                "fitted_on": name,
                "faces": int(keep.sum()),
                "fidelity_test": scores(x_all[keep], p_all[keep], x_test, p_test, config),
                "fit_seconds": round(time.perf_counter() - started, 1),
            }
        )
        log.info("%s", results[-1])
    write_json(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
