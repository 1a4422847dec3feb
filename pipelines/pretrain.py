"""Stage ``pretrain``: ResNet-18 on FER2013 train (validated on public test), for transfer.

With ``fer2013_targets: ferplus`` it learns FER+'s vote distributions and keeps the epoch with
the best public-test accuracy on the FER+ majority; the FER2013 folder-label accuracy of that
epoch is reported beside it."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from ferops.config import load_section, setup_logging, write_json
from ferops.data import CLASSES, write_csv
from ferops.model import FerResNet, save_checkpoint
from ferops.plots import plot_history
from ferops.recipe import TeacherLabels, fer2013_learning, fer2013_measured
from ferops.tracking import (
    log_epoch,
    log_params_file,
    log_to_run,
    resume_run,
    run_tags,
    start_run,
)
from ferops.training import MEAN, STD, FaceSet, PretrainConfig, fit, predict, seed_everything

log = logging.getLogger("pretrain")


def subsample(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Indices of a class-stratified random subset of ``limit`` rows (all when 0)."""
    if not limit or limit >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    picks = [
        rng.permutation(np.flatnonzero(labels == c))[: max(1, round(limit * np.mean(labels == c)))]
        for c in np.unique(labels)
    ]
    return np.sort(np.concatenate(picks))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--teacher", type=Path, required=True, help="FER2013's teacher logits")
    parser.add_argument("--votes", type=Path, required=True, help="the ferplus stage's votes")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--plots", type=Path, required=True)
    parser.add_argument("--run", type=Path, required=True)
    args = parser.parse_args(argv)
    setup_logging()

    pretrain = PretrainConfig.from_section(load_section(args.params, "pretrain"))
    config, max_train, max_val = pretrain.train, pretrain.max_train, pretrain.max_val
    targets = config.fer2013_targets
    learning = fer2013_learning(args.data, args.votes, "train", targets)
    measured = fer2013_measured(args.data, args.votes, "publictest", targets)
    keep = subsample(learning.labels, max_train, config.seed)
    keep_val = subsample(measured.labels, max_val, config.seed)
    soft = (
        TeacherLabels(args.teacher).fer2013("train")[learning.rows[keep]]
        if config.distill_weight > 0
        else None
    )
    train = FaceSet(
        learning.images[keep],
        learning.labels[keep],
        config.resize,
        soft,
        None if learning.targets is None else learning.targets[keep],
    )
    val = FaceSet(measured.images[keep_val], measured.labels[keep_val], config.resize)
    log.info(
        "FER2013: %d train, %d public-test faces at %d px, targets %s, distillation weight %.2f",
        len(train),
        len(val),
        config.input_size,
        targets,
        config.distill_weight,
    )
    start_run(args.run, "pretrain", run_tags("pretrain"))
    with resume_run(args.run):
        log_params_file(Path(args.params), ["fer2013", "pretrain"])
        seed_everything(config.seed)
        model, history = fit(FerResNet(), train, val, config, on_epoch=log_epoch, desc="pretrain")
    best = max(history, key=lambda h: (h["val_acc"], -h["val_loss"]))
    folder = fer2013_measured(args.data, args.votes, "publictest", "folder")
    logits, _ = predict(
        model, FaceSet(folder.images, folder.labels, config.resize), config.input_size
    )
    fer2013_label_acc = float((logits.argmax(1) == folder.labels).mean())
    save_checkpoint(
        args.out,
        model,
        {
            "classes": list(CLASSES),
            "input_size": config.input_size,
            "resize": config.resize,
            "mean": MEAN,
            "std": STD,
            "source": "fer2013",
            "config": config.to_dict(),
        },
    )
    write_csv(args.plots / "history.csv", history)
    plot_history(history, args.plots / "curves.png", "pretrain on FER2013")
    write_json(
        args.metrics,
        {
            "val_acc": round(best["val_acc"], 4),
            "val_labels": targets,
            "fer2013_label_acc": round(fer2013_label_acc, 4),
            "best_epoch": int(best["epoch"]),
            "train_images": len(train),
            "val_images": len(val),
            "epochs": config.epochs,
            "seconds_per_epoch": round(float(np.mean([h["seconds"] for h in history])), 1),
            "seconds": round(float(np.sum([h["seconds"] for h in history])), 1),
        },
    )
    log_to_run(
        args.run,
        {"best_val_acc": best["val_acc"], "fer2013_label_acc": fer2013_label_acc},
        folders={"plots": args.plots},
    )
    log.info(
        "pretrain: best public-test accuracy %.4f (%s labels) at epoch %d; FER2013 labels %.4f",
        best["val_acc"],
        targets,
        best["epoch"],
        fer2013_label_acc,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
