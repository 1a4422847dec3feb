"""Fitting the per-class rule trees (scikit-learn; the training side of the explanation).

For each class c a depth-limited tree learns *the network's* decision "predicted == c" from the
512 penultimate features (those its classifier reads: :func:`classifier_inputs`). Trees are
exported as plain arrays (:class:`ferops.explanation.Tree`) so serving never unpickles anything.

The network is the oracle (TREPAN, Craven & Shavlik 1996): the trees learn its answers, not human
labels, so it can be asked about as many faces as we have — :func:`ask_network` queries it on
any gray faces through the evaluation transform, :func:`oracle_faces` gathers the faces.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.tree import DecisionTreeClassifier
from tqdm import tqdm

from ferops.explanation import LEAF, RULES_FILE, Tree, rule_text, simplify
from ferops.model import FEATURES, FerResNet
from ferops.sections import SectionConfig
from ferops.training import FaceSet, predict


@dataclass(frozen=True)
class RuleConfig(SectionConfig):
    """``explain`` section of params.yaml."""

    max_depth: int = 4
    min_samples_leaf: int = 2
    criterion: str = "gini"
    seed: int = 42
    depth_curve: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8)
    #: FER2013 train faces the network is asked about: a seeded random subset of this many
    #: (0 = none; more than there are = all 28,709).
    fer2013_faces: int = 10000
    #: Also ask about the mirror image of each of those FER2013 faces.
    flip: bool = True
    #: Where the network runs while it is asked (``auto`` | ``cpu`` | ``cuda``).
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.max_depth < 1 or self.min_samples_leaf < 1:
            raise ValueError("max_depth and min_samples_leaf must be >= 1")
        if self.fer2013_faces < 0:
            raise ValueError(f"fer2013_faces must be >= 0, got {self.fer2013_faces}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device {self.device!r} is not one of auto, cpu, cuda")
        if not self.depth_curve or min(self.depth_curve) < 1:
            raise ValueError(f"depth_curve needs depths >= 1, got {list(self.depth_curve)}")
        if self.criterion not in ("gini", "entropy", "log_loss"):
            raise ValueError(f"criterion {self.criterion!r} is not one of gini, entropy, log_loss")


def classifier_inputs(model: FerResNet) -> np.ndarray:
    """Indices of the pooled features the network's classifier reads: those with a nonzero weight
    for some class (all 512 for a dense classifier; few for a sparse one, ``head_features``)."""
    weight = model.net.fc.weight.detach().cpu().numpy()
    return np.flatnonzero(np.any(weight != 0, axis=0))


def fit_tree(
    features: np.ndarray,
    target: np.ndarray,
    config: RuleConfig,
    depth: int | None = None,
    columns: np.ndarray | None = None,
) -> Tree:
    """One tree for a boolean target, exported to plain arrays. With ``columns`` the tree may
    split only on those features (its feature indices still count all of ``features``' columns).
    """
    model = DecisionTreeClassifier(
        max_depth=depth or config.max_depth,
        min_samples_leaf=config.min_samples_leaf,
        criterion=config.criterion,
        random_state=config.seed,
    )
    columns = np.arange(features.shape[1]) if columns is None else np.asarray(columns)
    model.fit(features[:, columns], target.astype(int))
    tree = model.tree_
    value = tree.value[:, 0, :]  # per node: class shares (sklearn ≥1.4 stores fractions)
    value = value / np.clip(value.sum(axis=1, keepdims=True), 1e-12, None)
    positive = value[:, 1] if value.shape[1] > 1 else np.full(len(value), float(target.all()))
    return Tree(
        {
            "children_left": tree.children_left,
            "children_right": tree.children_right,
            "feature": columns[np.where(tree.feature < 0, 0, tree.feature)],
            "threshold": tree.threshold,
            "positive": positive,
            "samples": tree.n_node_samples,
        }
    )


def truncate(tree: Tree, depth: int) -> Tree:
    """``tree`` cut at ``depth``: nodes at that depth become leaves voting with their own share.

    A greedy top-down tree grown to a larger depth holds, above ``depth``, the splits a tree fitted
    with ``max_depth=depth`` would choose, so one deep fit gives the whole depth curve.
    """
    left, right = tree.left.copy(), tree.right.copy()
    stack = [(0, 0)]
    while stack:
        node, level = stack.pop()
        if left[node] == LEAF:
            continue
        if level >= depth:
            left[node] = right[node] = LEAF
        else:
            stack += [(int(left[node]), level + 1), (int(right[node]), level + 1)]
    data = tree.to_dict() | {"children_left": left, "children_right": right}
    return Tree(data)


def fidelity(tree: Tree, features: np.ndarray, target: np.ndarray) -> float:
    """Share of rows where the tree's vote equals the network's decision."""
    return float((tree.predict(features) == target.astype(bool)).mean())


def oracle_faces(
    augmented: Sequence[np.ndarray], fer2013: np.ndarray, config: RuleConfig
) -> tuple[list[np.ndarray], list[str]]:
    """The faces the network is asked about — never a test-split face — and where each is from.

    Every augmented SFEW training face (the augment stage's originals, flips, stretches), then
    ``config.fer2013_faces`` FER2013 train faces picked at random with ``config.seed`` (all when
    there are fewer), then their mirror images (same order) when ``config.flip``.
    """
    count = min(config.fer2013_faces, len(fer2013))
    # The first ``count`` of one seeded permutation: a smaller subset is a prefix of a larger one.
    picked = np.random.default_rng(config.seed).permutation(len(fer2013))[:count]
    faces = [np.asarray(face) for face in augmented] + [fer2013[i] for i in picked]
    sources = ["sfew_augmented"] * len(augmented) + ["fer2013"] * count
    if config.flip:
        faces += [np.ascontiguousarray(fer2013[i][:, ::-1]) for i in picked]
        sources += ["fer2013_flip"] * count
    return faces, sources


def ask_network(
    model: FerResNet,
    faces: Sequence[np.ndarray],
    resize: int,
    side: int,
    device: str = "auto",
    chunk: int = 2048,
) -> tuple[np.ndarray, np.ndarray]:
    """The oracle's answers: (512 features N×512 float32, predicted class index N) for gray uint8
    faces, through :func:`ferops.training.predict` (short side to ``resize``, centre
    ``side``×``side`` crop) — the evaluate stage's and the exported model's transform."""
    if not len(faces):
        raise ValueError("the network needs at least one face to answer")
    features, decisions = [], []
    for start in tqdm(range(0, len(faces), chunk), desc="asking the network", unit="chunk"):
        part = faces[start : start + chunk]
        data = FaceSet(part, np.zeros(len(part), dtype=np.int64), resize)
        logits, feats = predict(model, data, side, device=device)
        features.append(feats)
        decisions.append(logits.argmax(1))
    return np.concatenate(features), np.concatenate(decisions)


@dataclass
class ClassRules:
    """Readable rules of one class, with coverage and precision per rule."""

    rules: list[dict[str, Any]]
    text: str
    max_conditions: int


def class_rules(tree: Tree, features: np.ndarray, target: np.ndarray) -> ClassRules:
    """Rules from the leaves that vote for the class, in the paper's notation.

    Each rule (one root-to-leaf path, simplified) has its coverage (share of the rows it fires
    on) and precision (share of those the network did assign to the class), measured on
    ``features``. Alternatives are joined by ``||``; when the leaves voting *against* make a
    shorter text, the rule is written ``not (…)``.
    """
    target = target.astype(bool)
    leaves_of = np.array([tree.path(x)[-1] for x in features])
    positive, negative = [], []
    for nodes in tree.leaves():
        conditions = simplify(tree.conditions(nodes))
        fires = leaves_of == nodes[-1]
        entry = {
            "rule": rule_text(conditions),
            "conditions": [c.to_dict() for c in conditions],
            "coverage": round(float(fires.mean()), 4),
            "precision": round(float(target[fires].mean()), 4) if fires.any() else None,
            "votes": tree.leaf_votes(nodes[-1]),
        }
        (positive if entry["votes"] else negative).append(entry)
    if not positive:
        text = "never (no leaf votes for this class)"
    else:
        text = " || ".join(_wrap(r["rule"], len(positive)) for r in positive)
        if negative:
            alt = "not (" + " || ".join(_wrap(r["rule"], len(negative)) for r in negative) + ")"
            if len(alt) < len(text):
                text = alt
    longest = max((len(r["conditions"]) for r in positive + negative), default=0)
    return ClassRules(rules=positive + negative, text=text, max_conditions=longest)


def _wrap(rule: str, count: int) -> str:
    return f"({rule})" if count > 1 and " & " in rule else rule


def patterns(
    features: np.ndarray, predicted: np.ndarray, classes: Sequence[str]
) -> dict[str, list[float]]:
    """Characteristic pattern of each class: the centroid of the faces the network assigns to it
    (the overall centroid when it assigns none)."""
    out = {}
    for index, name in enumerate(classes):
        members = features[predicted == index]
        out[name] = (members if len(members) else features).mean(axis=0).round(6).tolist()
    return out


def rules_markdown(
    classes: Sequence[str], rules: dict[str, ClassRules], fid: dict[str, Any]
) -> str:
    """The paper's "Extracted Rules" table, with fidelity and per-rule coverage / precision."""
    lines = [
        "# Extracted rules",
        "",
        (
            "Per class, a depth-limited decision tree on the 512 penultimate features learns the "
            "network's own decision. `&` = AND, `||` = OR, `not` = NOT."
        ),
        "",
        "| Decision | Rules | fidelity (test) | fidelity (train) |",
        "|---|---|---|---|",
    ]
    for name in classes:
        lines.append(
            f"| {name} | {rules[name].text} | {fid['test'][name]:.2%} | {fid['train'][name]:.2%} |"
        )
    lines += [
        "",
        f"Mean fidelity: test {fid['test_mean']:.2%}, train {fid['train_mean']:.2%}.",
        "",
    ]
    for name in classes:
        lines += [f"## {name}", "", "| votes | rule | coverage | precision |", "|---|---|---|---|"]
        for r in rules[name].rules:
            precision = "–" if r["precision"] is None else f"{r['precision']:.2%}"
            votes = "yes" if r["votes"] else "no"
            lines.append(f"| {votes} | {r['rule']} | {r['coverage']:.2%} | {precision} |")
        lines.append("")
    return "\n".join(lines)


def plot_tree_png(tree: Tree, name: str, path: Path) -> None:
    """A picture of one class's tree: split conditions, samples, share voting for the class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depth_of = {0: 0}
    positions: dict[int, tuple[float, int]] = {}
    leaves = tree.leaves()
    for i, nodes in enumerate(leaves):
        for d, node in enumerate(nodes):
            depth_of[node] = d
        positions[nodes[-1]] = (float(i), len(nodes) - 1)

    def place(node: int) -> float:
        if node in positions:
            return positions[node][0]
        x = (place(int(tree.left[node])) + place(int(tree.right[node]))) / 2
        positions[node] = (x, depth_of[node])
        return x

    place(0)
    depth = max(d for _, d in positions.values())
    fig, ax = plt.subplots(figsize=(max(6, 1.9 * len(leaves)), 1.6 * (depth + 1)))
    for node, (x, d) in positions.items():
        if tree.left[node] != -1:
            for child in (int(tree.left[node]), int(tree.right[node])):
                cx, cd = positions[child]
                ax.plot([x, cx], [-d, -cd], color="grey", lw=1, zorder=1)
            label = f"feature{tree.feature[node] + 1}\n≤ {tree.threshold[node]:.3f}"
            color = "white"
        else:
            votes = tree.leaf_votes(node)
            label = (
                f"{'YES' if votes else 'no'}\n{tree.positive[node]:.0%} of {tree.samples[node]}"
            )
            color = "#9be39b" if votes else "#eeeeee"
        ax.text(
            x,
            -d,
            label,
            ha="center",
            va="center",
            fontsize=7,
            zorder=2,
            bbox={"boxstyle": "round", "fc": color, "ec": "grey"},
        )
    ax.set_title(f"{name}: network says {name}? (left branch = condition true)")
    ax.set_xlim(-0.8, len(leaves) - 0.2)
    ax.set_ylim(-depth - 0.6, 0.6)
    ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_rules(
    folder: Path,
    classes: Sequence[str],
    trees: dict[str, Tree],
    rules: dict[str, ClassRules],
    class_patterns: dict[str, list[float]],
    config: RuleConfig | None = None,
) -> Path:
    """Write :data:`~ferops.explanation.RULES_FILE` (what :class:`~ferops.explanation.Explainer`
    reads, and every bundle carries): the classes, the 512-feature count, the trees, each class's
    rule text and voting rules, the class patterns, and the tree settings; returns its path."""
    document = {
        "classes": list(classes),
        "features": FEATURES,
        "config": asdict(config) if config is not None else None,
        "target": "network prediction == class (one-vs-rest)",
        "trees": {n: t.to_dict() for n, t in trees.items()},
        "rules": {n: {"text": r.text, "rules": r.rules} for n, r in rules.items()},
        "patterns": class_patterns,
    }
    path = Path(folder) / RULES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document) + "\n", encoding="utf-8")
    return path
