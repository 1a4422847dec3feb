"""Stage ``pretrain``: ResNet-18 on FER2013 train (validated on public test), for transfer."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from ferops.config import load_section, setup_logging, write_json
from ferops.data import CLASSES, write_csv
from ferops.model import FerResNet, save_checkpoint
from ferops.plots import plot_history
from ferops.recipe import TeacherLabels
from ferops.tracking import (
    log_epoch,
    log_params_file,
    log_to_run,
    resume_run,
    run_tags,
    start_run,
)
from ferops.training import MEAN, STD, FaceSet, PretrainConfig, fit, seed_everything

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
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--plots", type=Path, required=True)
    parser.add_argument("--run", type=Path, required=True)
    args = parser.parse_args(argv)
    setup_logging()

    pretrain = PretrainConfig.from_section(load_section(args.params, "pretrain"))
    config, max_train, max_val = pretrain.train, pretrain.max_train, pretrain.max_val
    arrays = np.load(args.data)
    keep = subsample(arrays["y_train"], max_train, config.seed)
    keep_val = subsample(arrays["y_publictest"], max_val, config.seed)
    soft = (
        TeacherLabels(args.teacher).fer2013("train")[keep] if config.distill_weight > 0 else None
    )
    train = FaceSet(arrays["x_train"][keep], arrays["y_train"][keep], config.resize, soft)
    val = FaceSet(
        arrays["x_publictest"][keep_val], arrays["y_publictest"][keep_val], config.resize
    )
    log.info(
        "FER2013: %d train, %d public-test faces at %d px, distillation weight %.2f",
        len(train),
        len(val),
        config.input_size,
        config.distill_weight,
    )
    start_run(args.run, "pretrain", run_tags("pretrain"))
    with resume_run(args.run):
        log_params_file(Path(args.params), ["fer2013", "pretrain"])
        seed_everything(config.seed)
        model, history = fit(FerResNet(), train, val, config, on_epoch=log_epoch, desc="pretrain")
    best = max(history, key=lambda h: (h["val_acc"], -h["val_loss"]))
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
            "best_epoch": int(best["epoch"]),
            "train_images": len(train),
            "val_images": len(val),
            "epochs": config.epochs,
            "seconds_per_epoch": round(float(np.mean([h["seconds"] for h in history])), 1),
            "seconds": round(float(np.sum([h["seconds"] for h in history])), 1),
        },
    )
    log_to_run(args.run, {"best_val_acc": best["val_acc"]}, folders={"plots": args.plots})
    log.info(
        "pretrain: best public-test accuracy %.4f at epoch %d", best["val_acc"], best["epoch"]
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
