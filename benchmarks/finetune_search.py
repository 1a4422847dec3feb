"""Fine-tuning search on this CPU by the honest protocol (no GPU needed, no pre-training rerun).

Every recipe is fine-tuned from the ``pretrain`` stage's checkpoint on the same clip-grouped
folds of train + val as the ``crossval`` stage (the test split is never loaded), with the same
seeds; then each fold's held-out faces are scored under the post-training knobs, which cost no
training:

- **weight interpolation** (WiSE-FT, Wortsman et al. 2022): ``alpha · fine-tuned + (1 − alpha)
  · pre-trained``, every float tensor (BatchNorm statistics too); 1 = the fine-tuned network;
- **logit adjustment** (Menon et al. 2021): ``logits − tau · log(prior)``, the prior being the
  class mix the fine-tuning batches held (SFEW fold + FER2013 by ``extra_share``); 0 = none.
  It is a change of the classifier's bias, so the network keeps its shape.

Per recipe and knob setting: fold accuracies, mean ± std, FER2013 public-test accuracy (the
aligned chips; forgetting), the per-class rule trees' fidelity on the held-out faces (trees
fitted on the fold's augmented training faces plus FER2013 train faces and their mirrors, as
the ``explain`` stage does), and the paired difference to the shipped setting. Choosing the
best of a grid on the same folds flatters it, so the search also reports **leave-one-fold-out
selection**: for each fold, the setting best on the other folds, scored on that fold — an
unbiased estimate of "pick by CV".

    python benchmarks/finetune_search.py --recipes shipped lr005 mix25
    python benchmarks/finetune_search.py --recipes head1 head2 --alphas 1 --taus 0

``head_features`` (a sparse classifier trained jointly with the backbone, issue 15): the rule
trees split only on the features the classifier reads, as the ``explain`` stage fits them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ferops.augment import augment_image
from ferops.config import load_section
from ferops.crossval import load_fold_inputs, paired_difference, run_fold
from ferops.model import CLASSES, FerResNet
from ferops.rules import (
    RuleConfig,
    ask_network,
    classifier_inputs,
    fidelity,
    fit_tree,
    oracle_faces,
)
from ferops.training import FaceSet

log = logging.getLogger("finetune_search")

#: name → changes to params.yaml's ``train`` section.
RECIPES: dict[str, dict[str, Any]] = {
    "shipped": {},
    "lr005": {"lr": 0.005},
    "mix25": {"extra_share": 0.25},
    "ls0": {"label_smoothing": 0.0},
    "ep20": {"epochs": 20},
    "head1": {"head_features": 1},
    "head2": {"head_features": 2},
    "head3": {"head_features": 3},
    "smoke": {"epochs": 1},  # a check that the search runs end to end
}
ALPHAS = (1.0, 0.8, 0.6, 0.5, 0.4)
TAUS = (0.0, 0.25, 0.5, 1.0)
FIDELITY_FER_FACES = 2000


def interpolate(
    start: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], alpha: float
) -> FerResNet:
    """A network with ``alpha · tuned + (1 − alpha) · start`` (float tensors; counters: tuned)."""
    state = {
        k: alpha * v + (1 - alpha) * start[k] if v.is_floating_point() else v
        for k, v in tuned.items()
    }
    model = FerResNet()
    model.load_state_dict(state)
    return model.eval()


def classify(model: FerResNet, features: np.ndarray) -> np.ndarray:
    """The network's logits from its 512 pooled features (its ``fc`` layer, in NumPy)."""
    fc = model.net.fc
    return features @ fc.weight.detach().numpy().T + fc.bias.detach().numpy()


def batch_prior(labels: np.ndarray, extra_labels: np.ndarray | None, share: float) -> np.ndarray:
    """Class mix of the fine-tuning batches: the fold's faces, and ``share`` of FER2013."""
    prior = np.bincount(labels, minlength=len(CLASSES)) / len(labels)
    if extra_labels is not None and share > 0:
        fer = np.bincount(extra_labels, minlength=len(CLASSES)) / len(extra_labels)
        prior = (1 - share) * prior + share * fer
    return np.clip(prior, 1e-4, None)


def loo_selection(scores: dict[str, list[float]]) -> dict[str, Any]:
    """For each fold the setting with the best mean over the *other* folds, scored on it."""
    names = sorted(scores)
    table = np.array([scores[n] for n in names])
    picks, picked = [], []
    for fold in range(table.shape[1]):
        others = np.delete(table, fold, axis=1).mean(1)
        best = int(np.argmax(others))
        picks.append(names[best])
        picked.append(float(table[best, fold]))
    return {"picks": picks, "folds": picked, "mean": round(float(np.mean(picked)), 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipes", nargs="+", default=["shipped"], choices=sorted(RECIPES))
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/finetune_search.json")
    )
    parser.add_argument("--max-folds", type=int, default=0)
    parser.add_argument("--alphas", type=float, nargs="+", default=list(ALPHAS))
    parser.add_argument("--taus", type=float, nargs="+", default=list(TAUS))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    data = load_fold_inputs(
        "params.yaml",
        Path("data/split/split.csv"),
        Path("data/prepared/faces"),
        Path("models/pretrain.pt"),
        Path("data/fer2013/fer2013.npz"),
        Path("data/ferplus/votes.npz"),
        [Path("data/teacher/fer2013.npz"), Path("data/teacher/sfew.npz")],
    )
    rules = RuleConfig.from_section(load_section("params.yaml", "explain"))
    with np.load("data/fer2013/fer2013.npz") as blob:
        fer_public = FaceSet(blob["x_publictest"], blob["y_publictest"], data.config.resize)
        fer_train_x, fer_train_y = blob["x_train"], blob["y_train"]
    # trees fitted as the explain stage fits them, on fewer FER2013 faces (they are the slow part)
    oracle = dataclasses.replace(rules, fer2013_faces=FIDELITY_FER_FACES)
    report: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    report.setdefault("recipes", {})
    labels = np.asarray(data.labels)
    fold_ids = sorted(set(data.folds.tolist()))[: args.max_folds or None]
    for name in args.recipes:
        section = {**dataclasses.asdict(data.config), **RECIPES[name]}
        config = dataclasses.replace(data.config, **RECIPES[name])
        extra = data.extra
        if config.extra_share and extra is None:
            raise ValueError(f"{name}: extra_share needs the shipped recipe to mix FER2013 in")
        started = time.perf_counter()
        scores: dict[str, list[float]] = {}
        fer_scores: dict[str, list[float]] = {}
        fid_scores: dict[str, list[float]] = {}
        read_by_classifier: dict[str, list[int]] = {}
        for fold in fold_ids:
            held = data.folds == fold
            _, model = run_fold(
                data.images,
                data.labels,
                ~held,
                held,
                config,
                data.augment,
                data.start_state,
                seed=config.seed + fold,
                desc=f"{name} {fold}",
                soft=data.soft,
                extra=extra,
            )
            tuned = {k: v.detach().clone() for k, v in model.state_dict().items()}
            prior = batch_prior(labels[~held], fer_train_y if extra else None, config.extra_share)
            train_faces = [
                v
                for i in np.flatnonzero(~held)
                for v in augment_image(data.images[i], data.augment).values()
            ]
            fit_faces, _ = oracle_faces(train_faces, fer_train_x, oracle)
            held_faces = [data.images[i] for i in np.flatnonzero(held)]
            for alpha in args.alphas:
                net = interpolate(data.start_state, tuned, alpha)
                held_f, held_p = ask_network(net, held_faces, config.resize, config.input_size)
                fer_f, _ = ask_network(net, fer_public.images, config.resize, config.input_size)
                fit_f, _ = ask_network(net, fit_faces, config.resize, config.input_size)
                held_logits, fer_logits, fit_logits = (
                    classify(net, f) for f in (held_f, fer_f, fit_f)
                )
                assert np.array_equal(held_logits.argmax(1), held_p)
                for tau in args.taus:
                    key = f"alpha={alpha} tau={tau}"
                    shift = tau * np.log(prior)
                    pred = (held_logits - shift).argmax(1)
                    scores.setdefault(key, []).append(float((pred == labels[held]).mean()))
                    fer_pred = (fer_logits - shift).argmax(1)
                    fer_scores.setdefault(key, []).append(
                        float((fer_pred == fer_public.labels).mean())
                    )
                    if tau == 0:  # trees are the slow part: fidelity of the plain argmax only
                        fit_pred = fit_logits.argmax(1)
                        columns = classifier_inputs(net)  # as the explain stage fits them
                        fids = [
                            fidelity(
                                fit_tree(fit_f, fit_pred == c, rules, columns=columns),
                                held_f,
                                pred == c,
                            )
                            for c in range(len(CLASSES))
                        ]
                        read_by_classifier.setdefault(key, []).append(len(columns))
                        fid_scores.setdefault(key, []).append(float(np.mean(fids)))
            log.info(
                "%s fold %d: %s",
                name,
                fold,
                {k: round(v[-1], 3) for k, v in scores.items() if k.endswith("tau=0.0")},
            )
        base = scores["alpha=1.0 tau=0.0"]
        settings = {
            key: {
                "folds": [round(s, 4) for s in v],
                "mean": round(float(np.mean(v)), 4),
                "std": round(float(np.std(v, ddof=1)), 4) if len(v) > 1 else 0.0,
                "fer2013_publictest": round(float(np.mean(fer_scores[key])), 4),
                **(
                    {
                        "fidelity_held_out": round(float(np.mean(fid_scores[key])), 4),
                        "classifier_features": read_by_classifier[key],
                    }
                    if key in fid_scores
                    else {}
                ),
                **({"vs_alpha1_tau0": paired_difference(v, base)} if len(v) > 1 else {}),
            }
            for key, v in scores.items()
        }
        report["recipes"][name] = {
            "train_changes": RECIPES[name],
            "train": section,
            "settings": settings,
            "loo_selection": loo_selection(scores) if len(fold_ids) > 1 else None,
            "seconds": round(time.perf_counter() - started, 1),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        best = max(settings, key=lambda k: settings[k]["mean"])
        log.info(
            "%s: shipped %.4f, best %s %.4f (FER %.4f, fidelity %.4f), LOO selection %s",
            name,
            settings["alpha=1.0 tau=0.0"]["mean"],
            best,
            settings[best]["mean"],
            settings[best]["fer2013_publictest"],
            settings[best].get("fidelity_held_out", -1),
            report["recipes"][name]["loo_selection"],
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
