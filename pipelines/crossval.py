"""Stage ``crossval``: the shipped recipe (params ``train``) on the k clip-grouped folds of the
train + val faces (the test split is never loaded), each fold held out once; mean ± std
accuracy, logged to the pipeline's run."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from ferops.config import load_section, setup_logging, write_json
from ferops.crossval import CrossvalConfig, load_fold_inputs, run_fold
from ferops.recipe import fer2013_measured
from ferops.tracking import log_to_run
from ferops.training import FaceSet, TrainConfig, predict

log = logging.getLogger("crossval")


def ferplus_accuracy(model, faces: FaceSet, config: TrainConfig) -> float:
    """Accuracy of ``model`` on ``faces`` (centre crops), 4 decimals."""
    logits, _ = predict(model, faces, config.input_size, device=config.device)
    return round(float((logits.argmax(1) == faces.labels).mean()), 4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--crops", type=Path, required=True)
    parser.add_argument("--pretrained", type=Path, required=True)
    parser.add_argument("--fer2013", type=Path, required=True)
    parser.add_argument(
        "--teacher",
        type=Path,
        nargs="+",
        required=True,
        help="the teach stage's logit files (FER2013's and SFEW's)",
    )
    parser.add_argument("--votes", type=Path, required=True, help="the ferplus stage's votes")
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    args = parser.parse_args(argv)
    setup_logging()

    data = load_fold_inputs(
        args.params,
        args.split,
        args.crops,
        args.pretrained,
        args.fer2013,
        args.votes,
        args.teacher,
    )
    # Forgetting, fold by fold: each fold network on the FER+ public-test majority.
    ferplus = fer2013_measured(args.fer2013, args.votes, "publictest", "ferplus")
    ferplus_set = FaceSet(ferplus.images, ferplus.labels, data.config.resize)
    config, folds = data.config, data.folds
    max_folds = CrossvalConfig.from_section(load_section(args.params, "crossval")).max_folds
    fold_ids = sorted(set(folds.tolist()))[: max_folds or None]
    results = []
    for fold in fold_ids:
        held = folds == fold
        metrics, model = run_fold(
            data.images,
            data.labels,
            ~held,
            held,
            config,
            data.augment,
            data.start_state,
            seed=config.seed + fold,
            desc=f"fold {fold}",
            soft=data.soft,
            extra=data.extra,
        )
        results.append(
            {
                "fold": fold,
                "accuracy": metrics["accuracy"],
                "n": metrics["n"],
                "macro_f1": metrics["macro_f1"],
                "recall": metrics["recall"],
                "ferplus_publictest_accuracy": ferplus_accuracy(model, ferplus_set, config),
            }
        )
        log.info("fold %d: accuracy %.4f on %d faces", fold, metrics["accuracy"], metrics["n"])
    accuracies = np.array([r["accuracy"] for r in results])
    summary = {
        "folds": results,
        "k": len(results),
        "init": data.init,
        "accuracy_mean": round(float(accuracies.mean()), 4),
        "accuracy_std": round(float(accuracies.std(ddof=1)) if len(results) > 1 else 0.0, 4),
        "ferplus_publictest_accuracy_mean": round(
            float(np.mean([r["ferplus_publictest_accuracy"] for r in results])), 4
        ),
    }
    write_json(args.metrics, summary)
    log_to_run(
        args.run,
        {
            "crossval_accuracy_mean": summary["accuracy_mean"],
            "crossval_accuracy_std": summary["accuracy_std"],
            "crossval_ferplus_publictest_accuracy_mean": summary[
                "ferplus_publictest_accuracy_mean"
            ],
        },
    )
    log.info(
        "crossval: %.4f ± %.4f over %d folds",
        summary["accuracy_mean"],
        summary["accuracy_std"],
        len(results),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
