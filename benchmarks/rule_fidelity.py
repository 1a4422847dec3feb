"""Issue 15 part 1: can per-class rule trees (≤ 4 conditions, axis-aligned, on the 512 features)
agree with the network on ≥ 97 % of new faces? A comparison of fitting recipes and of a sparse
refit of the last layer, chosen on faces outside the test split only.

    python benchmarks/rule_fidelity.py                  # every method (~30 min on 2 busy cores)
    python benchmarks/rule_fidelity.py --only shipped sparse_fc --read-test shipped

Validation (selection) = the SFEW val split's 107 crops and their mirror images (214 inputs) and,
as a second, larger set from another domain, FER2013's public test (3,589). Fidelity is the
pipeline's: per class, agreement of the tree's vote with "network's argmax == class" (one vs
rest), averaged over the 7 classes. ``--read-test`` scores the named recipe on the SFEW test
split once. The network answers each face set once (1 thread); answers are cached as .npz under
``--cache``. Writes benchmarks/results/rule_fidelity.json after every method.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from ferops.augment import random_square_crop
from ferops.data import load_augmented, load_faces, read_csv
from ferops.model import load_checkpoint
from ferops.rules import RuleConfig, ask_network
from ferops.training import centre_square, resize_short_side

CLASSES = 7
Set = tuple[np.ndarray, np.ndarray]  # (features N×512 float32, logits N×7)


def face_sets(args: argparse.Namespace) -> dict[str, Set]:
    """The network's features and logits on every face set, computed once and cached."""
    torch.set_num_threads(1)
    model, meta = load_checkpoint(args.model)
    weight = model.net.fc.weight.detach().numpy()
    bias = model.net.fc.bias.detach().numpy()
    args.cache.mkdir(parents=True, exist_ok=True)
    np.savez(args.cache / "fc.npz", W=weight, b=bias)
    with np.load(args.fer2013) as blob:
        fer_train, fer_public = blob["x_train"], blob["x_publictest"]
    augmented, _, _ = load_augmented(args.augmented)

    def split(name: str) -> list[np.ndarray]:
        return load_faces(args.split, args.crops, [name])[0]

    def flipped(faces: list[np.ndarray]) -> list[np.ndarray]:
        return [np.ascontiguousarray(face[:, ::-1]) for face in faces]

    def shifted() -> list[np.ndarray]:
        # the training transform's random 48 px window of a 54 px face, mirrored half the time
        rng = np.random.default_rng(1)
        pool = [resize_short_side(np.asarray(f), meta["resize"]) for f in augmented]
        pool += [resize_short_side(f, meta["resize"]) for f in fer_train]
        out = []
        for i in rng.integers(0, len(pool), args.synthetic):
            crop = random_square_crop(pool[i], meta["input_size"], rng)
            out.append(np.ascontiguousarray(crop[:, ::-1] if rng.random() < 0.5 else crop))
        return out

    def mixed() -> list[np.ndarray]:
        # pixel mixup of two random non-test faces, weight U(0.2, 0.8)
        rng = np.random.default_rng(2)
        pool = [
            centre_square(resize_short_side(np.asarray(f), meta["resize"]), meta["input_size"])
            for f in [*augmented, *fer_train]
        ]
        a, b = (
            rng.integers(0, len(pool), args.synthetic),
            rng.integers(0, len(pool), args.synthetic),
        )
        lam = rng.uniform(0.2, 0.8, args.synthetic)
        return [
            np.clip(w * pool[i].astype(np.float32) + (1 - w) * pool[j], 0, 255).astype(np.uint8)
            for i, j, w in zip(a, b, lam, strict=True)
        ]

    makers: dict[str, Callable[[], list[np.ndarray]]] = {
        "sfew_aug": lambda: augmented,
        "sfew_train_flip": lambda: flipped(split("train")),
        "sfew_val": lambda: split("val"),
        "sfew_val_flip": lambda: flipped(split("val")),
        "sfew_test": lambda: split("test"),
        "fer_train": lambda: list(fer_train),
        "fer_train_flip": lambda: flipped(list(fer_train)),
        "fer_pub": lambda: list(fer_public),
        "shift": shifted,
        "mixup": mixed,
    }
    sets = {}
    for name, make in makers.items():
        path = args.cache / f"{name}.npz"
        if not path.exists():
            features, _ = ask_network(model, make(), meta["resize"], meta["input_size"], "cpu")
            np.savez(path, features=features, logits=features @ weight.T + bias)
        with np.load(path) as blob:
            sets[name] = (blob["features"].astype(np.float32), blob["logits"])
    return sets


def join(sets: dict[str, Set], *names: str, rows: dict[str, np.ndarray] | None = None) -> Set:
    rows = rows or {}
    parts = [
        (sets[n][0][rows.get(n, slice(None))], sets[n][1][rows.get(n, slice(None))]) for n in names
    ]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def margin(logits: np.ndarray, c: int) -> np.ndarray:
    """How far class ``c``'s logit is above the best other class (negative: not chosen)."""
    return logits[:, c] - np.delete(logits, c, axis=1).max(1)


class Rule:
    """One class's depth-limited tree: sklearn structure, leaves voting by weighted majority of
    the network's decision (as :class:`ferops.explanation.Tree` votes)."""

    def __init__(
        self,
        features: np.ndarray,
        logits: np.ndarray,
        c: int,
        depth: int = 4,
        min_leaf: int = 2,
        criterion: str = "gini",
        weight: np.ndarray | None = None,
        candidates: np.ndarray | None = None,
        regression: bool = False,
        tao: bool = False,
    ) -> None:
        target = logits.argmax(1) == c
        self.candidates = candidates
        x = self._view(features)
        if regression:  # structure from the clipped logit margin, votes by majority
            model = DecisionTreeRegressor(
                max_depth=depth, min_samples_leaf=min_leaf, random_state=42
            )
            model.fit(x, np.clip(margin(logits, c), -2, 2), sample_weight=weight)
        else:
            model = DecisionTreeClassifier(
                max_depth=depth, min_samples_leaf=min_leaf, criterion=criterion, random_state=42
            )
            model.fit(x, target.astype(int), sample_weight=weight)
        t = model.tree_
        self.left, self.right = t.children_left.copy(), t.children_right.copy()
        self.feature, self.threshold = np.maximum(t.feature, 0), t.threshold.copy()
        self.weight = np.ones(len(x)) if weight is None else weight
        self._relabel(x, target)
        if tao:
            self._tao(x, target)

    def _view(self, features: np.ndarray) -> np.ndarray:
        return features if self.candidates is None else features[:, self.candidates]

    def _leaf(self, x: np.ndarray, start: int = 0) -> np.ndarray:
        node = np.full(len(x), start)
        while (inner := self.left[node] != -1).any():
            idx = np.flatnonzero(inner)
            n = node[idx]
            node[idx] = np.where(
                x[idx, self.feature[n]] <= self.threshold[n], self.left[n], self.right[n]
            )
        return node

    def _relabel(self, x: np.ndarray, target: np.ndarray) -> None:
        leaf, size = self._leaf(x), len(self.left)
        positive = np.bincount(leaf, self.weight * target, size)
        self.vote = positive > 0.5 * np.bincount(leaf, self.weight, size)

    def _reaching(self, x: np.ndarray, node: int) -> np.ndarray:
        """Rows whose root-to-leaf path passes through ``node``."""
        path_nodes = np.zeros(len(x), dtype=np.int64)
        hit = path_nodes == node
        while (inner := (self.left[path_nodes] != -1) & ~hit).any():
            idx = np.flatnonzero(inner)
            n = path_nodes[idx]
            path_nodes[idx] = np.where(
                x[idx, self.feature[n]] <= self.threshold[n], self.left[n], self.right[n]
            )
            hit |= path_nodes == node
        return np.flatnonzero(hit)

    def _tao(self, x: np.ndarray, target: np.ndarray, passes: int = 8) -> None:
        """Tree alternating optimisation (Carreira-Perpiñán & Tavallali, NeurIPS 2018): each
        split in turn, deepest first, takes the (feature, threshold) with the least weighted
        0/1 error of the whole tree given the rest; the depth never grows."""
        depth = {0: 0}
        for node in range(len(self.left)):
            if self.left[node] != -1:
                depth[self.left[node]] = depth[self.right[node]] = depth[node] + 1
        inner = sorted((n for n in depth if self.left[n] != -1), key=lambda n: -depth[n])
        for _ in range(passes):
            changed = 0
            for node in inner:
                rows = self._reaching(x, node)
                ok_left = self.vote[self._leaf(x[rows], self.left[node])] == target[rows]
                ok_right = self.vote[self._leaf(x[rows], self.right[node])] == target[rows]
                care = ok_left != ok_right
                if not care.any():
                    continue
                xc, want, wc = x[rows][care], ok_left[care], self.weight[rows][care]
                now = float(
                    (wc * ((xc[:, self.feature[node]] <= self.threshold[node]) != want)).sum()
                )
                order = np.argsort(xc, axis=0, kind="stable")
                xs = np.take_along_axis(xc, order, 0)
                w_left, w_right = np.where(want, wc, 0.0)[order], np.where(want, 0.0, wc)[order]
                error = np.cumsum(w_right, 0) + w_left.sum(0) - np.cumsum(w_left, 0)
                error[:-1][xs[1:] <= xs[:-1]] = np.inf
                error[-1] = np.inf
                k, f = np.unravel_index(np.argmin(error), error.shape)
                if error[k, f] < now - 1e-9:
                    self.feature[node], self.threshold[node] = f, (xs[k, f] + xs[k + 1, f]) / 2
                    self._relabel(x, target)
                    changed += 1
            if not changed:
                break

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.vote[self._leaf(self._view(features))]


def fidelity(rules: list[Rule], data: Set) -> np.ndarray:
    decided = data[1].argmax(1)
    return np.array([(r.predict(data[0]) == (decided == c)).mean() for c, r in enumerate(rules)])


def sparse_fc(
    fit: Set, labels_weight: np.ndarray, lam: float, iters: int = 400
) -> tuple[np.ndarray, np.ndarray]:
    """The last layer refitted with an L1 penalty (FISTA, from zero weights) to reproduce the
    network's own softmax on frozen features (distillation, not labels), on standardised
    features, returned on the raw features (still one Linear layer)."""
    x, logits = fit
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xs = torch.from_numpy((x - mu) / sd)
    w = torch.from_numpy(labels_weight).float()
    soft = torch.softmax(torch.from_numpy(logits), 1)
    step = 1.0 / (0.5 * float(torch.linalg.matrix_norm(xs * w.sqrt()[:, None], 2)) ** 2 + 1e-3)
    weight, bias = torch.zeros(CLASSES, x.shape[1]), soft.new_zeros(CLASSES)
    zw, zb, t = weight.clone(), bias.clone(), 1.0
    for _ in range(iters):
        zw.requires_grad_(True)
        zb.requires_grad_(True)
        loss = -(w * (soft * torch.log_softmax(xs @ zw.T + zb, 1)).sum(1)).sum()
        gw, gb = torch.autograd.grad(loss, [zw, zb])
        with torch.no_grad():
            nw = zw - step * gw
            nw = torch.sign(nw) * torch.clamp(nw.abs() - step * lam, min=0)
            nb = zb - step * gb
            tn = (1 + (1 + 4 * t * t) ** 0.5) / 2
            zw, zb = nw + (t - 1) / tn * (nw - weight), nb + (t - 1) / tn * (nb - bias)
            weight, bias, t = nw, nb, tn
    raw = (weight / torch.from_numpy(sd)).numpy()
    return raw, (bias - (weight * torch.from_numpy(mu / sd)).sum(1)).numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=Path("models/model.pt"))
    parser.add_argument("--augmented", type=Path, default=Path("data/augmented"))
    parser.add_argument("--fer2013", type=Path, default=Path("data/fer2013/fer2013.npz"))
    parser.add_argument("--split", type=Path, default=Path("data/split/split.csv"))
    parser.add_argument("--crops", type=Path, default=Path("data/prepared/faces"))
    parser.add_argument("--cache", type=Path, default=Path(".cache/rule_fidelity"))
    parser.add_argument("--synthetic", type=int, default=30000, help="shifted crops / mixups each")
    parser.add_argument("--only", nargs="*", help="method names (default: all)")
    parser.add_argument("--read-test", nargs="*", default=[], help="methods scored on test once")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/rule_fidelity.json"))
    args = parser.parse_args(argv)

    sets = face_sets(args)
    fc = np.load(args.cache / "fc.npz")
    val = join(sets, "sfew_val", "sfew_val_flip")
    pub = sets["fer_pub"]
    config = RuleConfig()
    n_fer = len(sets["fer_train"][0])
    # the shipped recipe's FER2013 subset: the same seeded permutation as ferops.rules.oracle_faces
    picked = np.random.default_rng(config.seed).permutation(n_fer)[: config.fer2013_faces]
    shipped = join(
        sets,
        "sfew_aug",
        "fer_train",
        "fer_train_flip",
        rows={"fer_train": picked, "fer_train_flip": picked},
    )
    sfew = join(sets, "sfew_aug", "sfew_train_flip")
    everything = join(sets, "sfew_aug", "sfew_train_flip", "fer_train", "fer_train_flip")
    n_sfew = len(sfew[0])
    half = np.r_[
        np.full(n_sfew, 0.5 / n_sfew),
        np.full(len(everything[0]) - n_sfew, 0.5 / (len(everything[0]) - n_sfew)),
    ]
    rng = np.random.default_rng(0)
    idx = rng.integers(0, n_sfew, 20000)
    noisy = np.maximum(
        sfew[0][idx] + rng.normal(0, 1, (20000, 512)).astype(np.float32) * 0.5 * sfew[0].std(0), 0
    )
    a, b = rng.integers(0, n_sfew, (2, 20000))
    lam = rng.uniform(0, 1, (20000, 1)).astype(np.float32)
    mixed_features = lam * sfew[0][a] + (1 - lam) * sfew[0][b]

    def fc_labelled(x: np.ndarray) -> Set:  # the network's last layer is the oracle for features
        return x, x @ fc["W"].T + fc["b"]

    sd = shipped[0].std(0)
    top64 = np.argsort(-np.abs(fc["W"] * sd).max(0))[:64]
    recipes: dict[str, tuple[str, Set, dict]] = {
        "shipped": ("augmented SFEW + 10k FER2013 train + flips, gini, min leaf 2", shipped, {}),
        "sfew_only": ("augmented SFEW + SFEW train flips only", sfew, {}),
        "all_faces": (
            "augmented SFEW + SFEW train flips + all FER2013 train + flips",
            everything,
            {},
        ),
        "all_faces_sfew_half": (
            "all faces, SFEW weighted half of the total",
            everything,
            {"weight": half * len(half)},
        ),
        "all_faces_min_leaf_50": (
            "all faces, min 50 faces per leaf",
            everything,
            {"min_leaf": 50},
        ),
        "all_faces_shift_mixup": (
            "all faces + 30k shifted crops + 30k pixel mixups",
            join(
                sets,
                "sfew_aug",
                "sfew_train_flip",
                "fer_train",
                "fer_train_flip",
                "shift",
                "mixup",
            ),
            {},
        ),
        "entropy": ("shipped faces, entropy criterion", shipped, {"criterion": "entropy"}),
        "margin_regression": (
            "shipped faces, regression tree on the clipped logit margin",
            shipped,
            {"regression": True},
        ),
        "top64_fc_features": (
            "shipped faces, splits only on the 64 features with the biggest fc weights",
            shipped,
            {"candidates": top64},
        ),
        "feature_noise": (
            "SFEW + 20k feature vectors with Gaussian noise (0.5 sd), fc as oracle",
            join({"s": sfew, "n": fc_labelled(noisy)}, "s", "n"),
            {},
        ),
        "feature_mixup": (
            "SFEW + 20k feature-vector mixups, fc as oracle",
            join({"s": sfew, "m": fc_labelled(mixed_features)}, "s", "m"),
            {},
        ),
        "tao": (
            "shipped faces, CART then tree alternating optimisation of the 0/1 fidelity",
            shipped,
            {"tao": True},
        ),
    }
    wanted = set(args.only or [*recipes, "sparse_fc"])
    old = json.loads(args.out.read_text()) if args.out.exists() else {}
    results = old.get("methods", {})
    out = {
        "date": datetime.date.today().isoformat(),
        "command": "python " + " ".join(sys.argv),
        "fidelity": "per class, tree vote == (network argmax == class); mean of 7 classes",
        "validation": {"sfew_val_and_flips": len(val[0]), "fer2013_public_test": len(pub[0])},
        "depth": 4,
        "methods": results,
    }

    def record(name: str, what: str, rules: list[Rule], fit: Set, relabel=None, **extra) -> None:
        """Score ``rules`` on validation (and on test once when asked); ``relabel`` gives the
        answers of a changed network for a face set's features."""
        relabel = relabel or (lambda s: s)
        v, p = fidelity(rules, relabel(val)), fidelity(rules, relabel(pub))
        entry = {
            "what": what,
            "fitted_on": len(fit[0]),
            "val_mean": round(float(v.mean()), 4),
            "val": [round(float(s), 4) for s in v],
            "fer_public_mean": round(float(p.mean()), 4),
            "fit_mean": round(float(fidelity(rules, fit).mean()), 4),
            **extra,
        }
        if name in args.read_test:
            t = fidelity(rules, relabel(sets["sfew_test"]))
            entry |= {
                "test_mean": round(float(t.mean()), 4),
                "test": [round(float(s), 4) for s in t],
            }
        results[name] = entry
        args.out.write_text(json.dumps(out, indent=2) + "\n")
        print(name, {k: entry[k] for k in ("val_mean", "fer_public_mean", "fit_mean")}, flush=True)

    for name, (what, fit, options) in recipes.items():
        if name in wanted:
            started = time.time()
            rules = [Rule(fit[0], fit[1], c, **options) for c in range(CLASSES)]
            record(name, what, rules, fit, seconds=round(time.time() - started))

    if "sparse_fc" in wanted:  # changes the network: every figure is the refitted network's
        labels = {
            "sfew_val": np.array(
                [int(r["label_index"]) for r in read_csv(args.split) if r["split"] == "val"]
            ),
            "fer_pub": np.load(args.fer2013)["y_publictest"],
        }
        fit_set = join(sets, "sfew_aug", "fer_train", "fer_train_flip")
        weight = np.r_[
            np.full(len(sets["sfew_aug"][0]), 0.5 / len(sets["sfew_aug"][0])),
            np.full(2 * n_fer, 0.25 / n_fer),
        ]
        for lam_ in (0.01, 0.03, 0.06, 0.1):
            w_, b_ = sparse_fc(fit_set, weight, lam_)
            used = np.flatnonzero(np.abs(w_).sum(0) > 0)

            def relabel(s: Set, w_: np.ndarray = w_, b_: np.ndarray = b_) -> Set:
                return s[0], s[0] @ w_.T + b_

            accuracy = {
                "sfew_val": float(
                    (relabel(sets["sfew_val"])[1].argmax(1) == labels["sfew_val"]).mean()
                ),
                "fer_public": float((relabel(pub)[1].argmax(1) == labels["fer_pub"]).mean()),
            }
            agree = {
                k: float((relabel(d)[1].argmax(1) == d[1].argmax(1)).mean())
                for k, d in (("sfew_val", val), ("fer_public", pub))
            }
            fit = relabel(shipped)
            rules = [Rule(fit[0], fit[1], c, candidates=used) for c in range(CLASSES)]
            record(
                f"sparse_fc_{lam_}",
                f"L1 refit of the fc layer (distilled, lambda {lam_}); trees on its answers",
                rules,
                fit,
                relabel=relabel,
                features_used=len(used),
                nonzero_per_class=(np.abs(w_) > 0).sum(1).tolist(),
                accuracy={k: round(v, 4) for k, v in accuracy.items()},
                agreement_with_shipped={k: round(v, 4) for k, v in agree.items()},
            )
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
