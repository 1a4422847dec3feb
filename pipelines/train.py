"""Stage ``train``: ResNet-18 on the augmented SFEW training faces, best checkpoint by val
accuracy, every epoch tracked in the pipeline's MLflow run (opened here)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from ferops.config import load_section, setup_logging, write_json
from ferops.data import CLASSES, load_augmented, load_faces, write_csv
from ferops.model import FerResNet, load_checkpoint, save_checkpoint
from ferops.plots import plot_history
from ferops.recipe import TeacherLabels, fer2013_extra, fer2013_measured, train_recipe
from ferops.tracking import (
    log_epoch,
    log_params_file,
    log_to_run,
    resume_run,
    run_tags,
    start_run,
)
from ferops.training import MEAN, STD, FaceSet, fit, predict, seed_everything

log = logging.getLogger("train")

#: params.yaml sections that shape the model, logged with every run.
MODEL_SECTIONS = ["prepare", "split", "augment", "fer2013", "pretrain", "train"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--crops", type=Path, required=True)
    parser.add_argument("--augmented", type=Path, required=True)
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
    parser.add_argument("--pretrain-run", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--plots", type=Path, required=True)
    args = parser.parse_args(argv)
    setup_logging()

    init, config = train_recipe(load_section(args.params, "train"))
    faces = load_section(args.params, "prepare").get("faces", {})

    images, labels, aug_rows = load_augmented(args.augmented)
    teacher = TeacherLabels(*args.teacher) if config.distill_weight > 0 else None
    soft = teacher.sfew([r["source_id"] for r in aug_rows]) if teacher is not None else None
    train = FaceSet(images, labels, config.resize, soft)
    extra = fer2013_extra(config, args.fer2013, args.votes, teacher)
    val_images, val_labels, _ = load_faces(args.split, args.crops, ["val"])
    val = FaceSet(val_images, val_labels, config.resize)
    seed_everything(config.seed)
    model = FerResNet()
    if init == "fer2013":
        pretrained, meta = load_checkpoint(args.pretrained)
        if meta["input_size"] != config.input_size:
            log.warning(
                "pre-trained at %d px, fine-tuning at %d px", meta["input_size"], config.input_size
            )
        model.load_state_dict(pretrained.state_dict())
    log.info(
        "train: %d augmented images, %d val, init=%s, %d px, FER2013 share %.2f",
        len(train),
        len(val),
        init,
        config.input_size,
        config.extra_share,
    )

    tags = run_tags("train")
    if init == "fer2013" and args.pretrain_run.exists():
        tags["pretrain_run_id"] = json.loads(args.pretrain_run.read_text())["run_id"]
    start_run(args.run, f"train-{init}-{config.input_size}px", tags)
    with resume_run(args.run):
        log_params_file(Path(args.params), MODEL_SECTIONS)
        model, history = fit(
            model, train, val, config, on_epoch=log_epoch, desc="train", extra=extra
        )

    best = max(history, key=lambda h: (h["val_acc"], -h["val_loss"]))
    meta = {
        "classes": list(CLASSES),
        "input_size": config.input_size,
        "resize": config.resize,
        "mean": MEAN,
        "std": STD,
        "init": init,
        "faces": faces,
        "best_epoch": int(best["epoch"]),
        "val_acc": best["val_acc"],
        "config": config.to_dict(),
    }
    save_checkpoint(args.out, model, meta)
    write_csv(args.plots / "history.csv", history)
    plot_history(history, args.plots / "curves.png", f"train ({init}, {config.input_size} px)")
    # Forgetting shows here first: the fine-tuned network on the FER+ public-test majority.
    ferplus = fer2013_measured(args.fer2013, args.votes, "publictest", "ferplus")
    logits, _ = predict(
        model, FaceSet(ferplus.images, ferplus.labels, config.resize), config.input_size
    )
    ferplus_acc = float((logits.argmax(1) == ferplus.labels).mean())
    seconds = [h["seconds"] for h in history]
    metrics = {
        "best_val_acc": round(best["val_acc"], 4),
        "best_epoch": int(best["epoch"]),
        "epochs": config.epochs,
        "train_images": len(train),
        "val_images": len(val),
        "ferplus_publictest_acc": round(ferplus_acc, 4),
        "seconds_per_epoch": round(float(np.mean(seconds)), 1),
        "seconds": round(float(np.sum(seconds)), 1),
    }
    write_json(args.metrics, metrics)
    log_to_run(
        args.run,
        {
            "best_val_acc": best["val_acc"],
            "best_epoch": best["epoch"],
            "seconds_per_epoch": metrics["seconds_per_epoch"],
            "ferplus_publictest_acc": ferplus_acc,
        },
        folders={"plots/train": args.plots},
    )
    log.info(
        "train: best val accuracy %.4f at epoch %d; FER+ public-test majority %.4f",
        best["val_acc"],
        best["epoch"],
        ferplus_acc,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
