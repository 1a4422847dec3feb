"""Stage ``explain``: per-class rule trees on the 512 features (those the classifier reads),
fitted on the network's own decisions for many faces outside the test split (augmented SFEW
training faces, FER2013 train faces and their mirror images: the network is the oracle, as in
TREPAN); fidelity on the test split's features and on the fitting set, rules.md / rules.json,
tree pictures, the depth curve, characteristic patterns — logged to the pipeline's MLflow run."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from ferops.config import load_section, setup_logging, write_json
from ferops.data import CLASSES, load_augmented
from ferops.features import read_features
from ferops.model import FEATURES, load_checkpoint
from ferops.rules import (
    RuleConfig,
    ask_network,
    class_rules,
    classifier_inputs,
    fidelity,
    fit_tree,
    oracle_faces,
    patterns,
    plot_tree_png,
    rules_markdown,
    save_rules,
    truncate,
)
from ferops.tracking import log_to_run

log = logging.getLogger("explain")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--augmented", type=Path, required=True)
    parser.add_argument("--fer2013", type=Path, required=True)
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--plots", type=Path, required=True)
    args = parser.parse_args(argv)
    setup_logging()

    config = RuleConfig.from_section(load_section(args.params, "explain"))
    x_test, p_test = read_features(args.features)["test"]
    model, meta = load_checkpoint(args.model)
    augmented, _, _ = load_augmented(args.augmented)
    with np.load(args.fer2013) as blob:
        fer2013 = blob["x_train"]
    faces, sources = oracle_faces(augmented, fer2013, config)
    x_fit, p_fit = ask_network(model, faces, meta["resize"], meta["input_size"], config.device)
    by_source = {s: sources.count(s) for s in dict.fromkeys(sources)}
    log.info("the network answered for %d faces %s", len(faces), by_source)

    # A feature the classifier gives no weight cannot be why it decided: the trees split only on
    # the ones it reads (all 512 unless train.head_features makes the classifier sparse).
    columns = classifier_inputs(model)
    log.info("the classifier reads %d of the %d features", len(columns), FEATURES)
    trees, rules, fid = {}, {}, {"train": {}, "test": {}}
    for index, name in enumerate(CLASSES):
        tree = fit_tree(x_fit, p_fit == index, config, columns=columns)
        trees[name] = tree
        rules[name] = class_rules(tree, x_fit, p_fit == index)
        fid["train"][name] = fidelity(tree, x_fit, p_fit == index)
        fid["test"][name] = fidelity(tree, x_test, p_test == index)
        plot_tree_png(tree, name, args.plots / f"tree_{name}.png")
    fid["train_mean"] = float(np.mean(list(fid["train"].values())))
    fid["test_mean"] = float(np.mean(list(fid["test"].values())))

    # One deep tree per class, cut at each depth (see truncate): the curve costs 7 fits, not 49.
    deepest = max(config.depth_curve)
    deep = [fit_tree(x_fit, p_fit == i, config, deepest, columns) for i in range(len(CLASSES))]
    curve = []
    for depth in config.depth_curve:
        scores = [fidelity(truncate(t, depth), x_test, p_test == i) for i, t in enumerate(deep)]
        curve.append({"depth": depth, "test_mean": round(float(np.mean(scores)), 4)})
    _plot_curve(curve, config.max_depth, args.plots / "depth_curve.png")

    save_rules(args.out, CLASSES, trees, rules, patterns(x_fit, p_fit, CLASSES), config)
    (args.out / "rules.md").write_text(rules_markdown(CLASSES, rules, fid), encoding="utf-8")

    metrics = {
        "fidelity_test": {k: round(v, 4) for k, v in fid["test"].items()},
        "fidelity_train": {k: round(v, 4) for k, v in fid["train"].items()},
        "fidelity_test_mean": round(fid["test_mean"], 4),
        "fidelity_train_mean": round(fid["train_mean"], 4),
        "max_depth": config.max_depth,
        "leaves": {n: len(t.leaves()) for n, t in trees.items()},
        "max_conditions": max(r.max_conditions for r in rules.values()),
        "depth_curve": curve,
        "fitted_on": len(x_fit),
        "fitted_on_by_source": by_source,
        "scored_on": len(x_test),
        "classifier_features": len(columns),
    }
    write_json(args.metrics, metrics)
    log_to_run(
        args.run,
        {
            "fidelity_test_mean": fid["test_mean"],
            "fidelity_train_mean": fid["train_mean"],
            **{f"fidelity_test_{k}": v for k, v in fid["test"].items()},
        },
        folders={"rules": args.out, "plots/explain": args.plots},
    )
    log.info(
        "fidelity: test %.4f, fitting set %.4f (depth %d, %d faces)",
        fid["test_mean"],
        fid["train_mean"],
        config.max_depth,
        len(x_fit),
    )
    return 0


def _plot_curve(curve: list[dict], chosen: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([c["depth"] for c in curve], [c["test_mean"] for c in curve], marker="o")
    ax.axvline(chosen, color="grey", ls="--", label=f"shipped depth {chosen}")
    ax.axhline(0.9664, color="red", ls=":", label="paper 96.64%")
    ax.set_xlabel("max tree depth (= max conditions per rule)")
    ax.set_ylabel("mean held-out fidelity")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
