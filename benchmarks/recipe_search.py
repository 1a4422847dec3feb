"""Recipe search by the honest protocol: grouped k-fold cross-validation on the train + val clips
only (the test split is never loaded), each recipe compared fold by fold with the baseline.

Two steps, because a GPU machine (when one is lent) has torch and OpenCV but no DVC or MLflow:

    # here, after `dvc repro teach`: pack the stage outputs the search needs into .gpu/
    python benchmarks/recipe_search.py pack --out .gpu
    # on the GPU machine (or here, slowly), the same ferops training code:
    PYTHONPATH=src python benchmarks/recipe_search.py search --data .gpu --out results/

``search`` pre-trains on FER2013 (validated on its public test) and fine-tunes each recipe on
the SFEW folds, writing ``recipe_search.json`` after every run (so a time limit keeps what
finished): per recipe the fold accuracies, mean ± std, flip-TTA accuracy, FER2013 public-test
accuracy after fine-tuning (forgetting), seconds, and the paired difference to the baseline.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ferops.augment import AugmentConfig
from ferops.crossval import paired_difference, run_fold
from ferops.model import FerResNet
from ferops.recipe import TeacherLabels
from ferops.training import FaceSet, TrainConfig, fit, predict, resize_short_side

log = logging.getLogger("recipe_search")

TILE = 100  # faces per row of a packed FER2013 image (lossless WebP, ≤ 16383 px a side)

PRETRAIN = {
    "epochs": 10,
    "batch_size": 128,
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "schedule": "cosine",
    "input_size": 48,
    "resize": 54,
    "online_flip": True,
    "seed": 42,
}
FINETUNE = {
    "epochs": 10,
    "batch_size": 32,
    "lr": 0.002,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "schedule": "cosine",
    "input_size": 48,
    "resize": 54,
    "online_flip": False,
    "label_smoothing": 0.1,
    "seed": 42,
}

#: (name, pre-training changes, fine-tuning changes), in the order they run.
RECIPES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("baseline", {}, {}),
    ("mix50", {}, {"extra_share": 0.5}),
    ("mix50_distill", {}, {"extra_share": 0.5, "distill_weight": 0.5}),
    (
        "pre_distill+mix50_distill",
        {"distill_weight": 0.5},
        {"extra_share": 0.5, "distill_weight": 0.5},
    ),
    ("pre30+mix50", {"epochs": 30}, {"extra_share": 0.5}),
    ("mix50_lr01", {}, {"extra_share": 0.5, "lr": 0.01}),
    ("mix50_ep20", {}, {"extra_share": 0.5, "epochs": 20}),
    ("mix25", {}, {"extra_share": 0.25}),
    ("pre_distill+mix50", {"distill_weight": 0.5}, {"extra_share": 0.5}),
    ("pre_distill25+mix50", {"distill_weight": 0.25}, {"extra_share": 0.5}),
]


def pack(args: argparse.Namespace) -> None:
    """Stage outputs → ``.gpu/``: FER2013 chips at the training scale as lossless WebP strips,
    labels and teacher logits, and the SFEW train + val chips with folds and teacher logits."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fer = np.load(args.fer2013)
    teacher = TeacherLabels(*args.teacher).arrays
    arrays = {}
    for split in ("train", "publictest"):
        chips = np.stack([resize_short_side(x, PRETRAIN["resize"]) for x in fer[f"x_{split}"]])
        n, side = len(chips), chips.shape[1]
        rows = -(-n // TILE)
        padded = np.zeros((rows * TILE, side, side), np.uint8)
        padded[:n] = chips
        for start in range(0, rows, TILE):
            block = padded[start * TILE : (start + TILE) * TILE]
            image = (
                block.reshape(-1, TILE, side, side).transpose(0, 2, 1, 3).reshape(-1, TILE * side)
            )
            cv2.imwrite(
                str(out / f"fer_{split}_{start // TILE}.webp"),
                image,
                [cv2.IMWRITE_WEBP_QUALITY, 101],
            )
        arrays[f"y_{split}"], arrays[f"n_{split}"] = fer[f"y_{split}"], n
        arrays[f"soft_{split}"] = teacher[f"fer2013_{split}"]
    sfew = teacher["sfew_ids"]
    from ferops.data import load_faces

    images, labels, rows = load_faces(args.split, args.crops, ["train", "val"])
    index = {image_id: i for i, image_id in enumerate(sfew)}
    arrays.update(
        x_sfew=np.stack(images),
        y_sfew=np.array(labels),
        fold_sfew=np.array([int(r["fold"]) for r in rows]),
        soft_sfew=teacher["sfew"][[index[r["image_id"]] for r in rows]],
    )
    np.savez_compressed(out / "arrays.npz", **arrays)
    log.info("packed %s", sorted(p.name for p in out.iterdir()))


def unpack_fer(folder: Path, split: str, n: int, side: int) -> np.ndarray:
    """The FER2013 chips of one split from the WebP strips :func:`pack` wrote."""
    parts = []
    for path in sorted(
        folder.glob(f"fer_{split}_*.webp"), key=lambda p: int(p.stem.rsplit("_", 1)[1])
    ):
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        parts.append(
            image.reshape(-1, side, TILE, side).transpose(0, 2, 1, 3).reshape(-1, side, side)
        )
    return np.concatenate(parts)[:n]


def search(args: argparse.Namespace) -> None:
    """Pre-train, fine-tune every recipe on every fold, write results after each recipe."""
    folder, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    arrays = np.load(folder / "arrays.npz")
    side = PRETRAIN["resize"]
    fer = {
        s: (
            unpack_fer(folder, s, int(arrays[f"n_{s}"]), side),
            arrays[f"y_{s}"],
            arrays[f"soft_{s}"],
        )
        for s in ("train", "publictest")
    }
    images, labels, folds = list(arrays["x_sfew"]), arrays["y_sfew"], arrays["fold_sfew"]
    soft = arrays["soft_sfew"]
    if args.smoke:  # a minute on a CPU: does the whole search run end to end?
        fer = {k: tuple(a[: args.smoke] for a in v) for k, v in fer.items()}
    fer_train = FaceSet(*fer["train"][:2], side, fer["train"][2])
    fer_public = FaceSet(*fer["publictest"][:2], side)
    teacher_public = float((fer["publictest"][2].argmax(1) == fer["publictest"][1]).mean())
    report: dict[str, Any] = {
        "device": args.device,
        "teacher_fer2013_publictest": teacher_public,
        "pretrain": {},
        "recipes": {},
    }
    pretrained: dict[str, dict] = {}
    started = time.perf_counter()
    for name, pre, fine in RECIPES:
        if args.recipes and name not in args.recipes:
            continue
        if time.perf_counter() - started > args.budget:
            log.warning("budget of %d s spent: %s and later recipes not run", args.budget, name)
            break
        pre_key = json.dumps(pre, sort_keys=True)
        if pre_key not in pretrained:
            config = TrainConfig.from_section(
                {**PRETRAIN, **pre, "device": args.device, **({"epochs": 1} if args.smoke else {})}
            )
            t0 = time.perf_counter()
            model, history = fit(
                FerResNet(), fer_train, fer_public, config, desc=f"pretrain {pre}"
            )
            seconds = time.perf_counter() - t0
            pretrained[pre_key] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            report["pretrain"][pre_key] = {
                "fer2013_publictest": max(h["val_acc"] for h in history),
                "epochs": config.epochs,
                "seconds": round(seconds, 1),
                "epochs_per_s": round(config.epochs / seconds, 3),
                "history": [round(h["val_acc"], 4) for h in history],
            }
        config = TrainConfig.from_section(
            {**FINETUNE, **fine, "device": args.device, **({"epochs": 1} if args.smoke else {})}
        )
        result: dict[str, Any] = {"pretrain": pre, "finetune": fine, "folds": [], "tta": []}
        t0 = time.perf_counter()
        for fold in sorted(set(folds.tolist()))[: 2 if args.smoke else None]:
            held = folds == fold
            metrics, model = run_fold(
                images,
                labels,
                ~held,
                held,
                config,
                AugmentConfig(),
                pretrained[pre_key],
                seed=config.seed + fold,
                desc=f"{name} {fold}",
                soft=soft,
                extra=fer_train if config.extra_share else None,
            )
            result["folds"].append(metrics["accuracy"])
            held_set = FaceSet([images[i] for i in np.flatnonzero(held)], labels[held], side)
            logits, _ = predict(
                model, held_set, config.input_size, device=args.device, flip_tta=True
            )
            result["tta"].append(float((logits.argmax(1) == labels[held]).mean()))
            if fold == 0:
                logits, _ = predict(model, fer_public, config.input_size, device=args.device)
                result["fer2013_publictest_after"] = float(
                    (logits.argmax(1) == fer_public.labels).mean()
                )
        result["seconds"] = round(time.perf_counter() - t0, 1)
        for key in ("folds", "tta"):
            result[f"{key}_mean"] = float(np.mean(result[key]))
            result[f"{key}_std"] = float(np.std(result[key], ddof=1))
        if name != "baseline" and "baseline" in report["recipes"]:  # same folds, same seeds
            result["vs_baseline"] = paired_difference(
                result["folds"], report["recipes"]["baseline"]["folds"]
            )
        report["recipes"][name] = result
        log.info(
            "%s: CV %.4f ± %.4f (TTA %.4f), FER2013 after %.4f",
            name,
            result["folds_mean"],
            result["folds_std"],
            result["tta_mean"],
            result.get("fer2013_publictest_after", -1),
        )
        (out / "recipe_search.json").write_text(
            json.dumps(report, indent=2, sort_keys=True) + "\n"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--fer2013", type=Path, default=Path("data/fer2013/fer2013.npz"))
    p.add_argument(
        "--teacher",
        type=Path,
        nargs="+",
        default=[Path("data/teacher/fer2013.npz"), Path("data/teacher/sfew.npz")],
    )
    p.add_argument("--split", type=Path, default=Path("data/split/split.csv"))
    p.add_argument("--crops", type=Path, default=Path("data/prepared/faces"))
    p.add_argument("--out", type=Path, default=Path(".gpu"))
    s = sub.add_parser("search")
    s.add_argument("--data", type=Path, default=Path(".gpu"))
    s.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    s.add_argument("--device", default="auto")
    s.add_argument("--budget", type=float, default=480, help="seconds; no new recipe starts after")
    s.add_argument("--recipes", nargs="*", default=[], help="names to run (default: all)")
    s.add_argument("--smoke", type=int, default=0, help="FER2013 faces kept and 1 epoch (a check)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    pack(args) if args.command == "pack" else search(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
