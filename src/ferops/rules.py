"""Fitting the per-class rule trees (scikit-learn; the training side of the explanation).

For each class c a depth-limited tree learns *the network's* decision "predicted == c" from the
512 penultimate features. Trees are exported as plain arrays (:class:`ferops.explanation.Tree`)
so serving never unpickles anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.tree import DecisionTreeClassifier

from ferops.explanation import Tree, rule_text, simplify


@dataclass(frozen=True)
class RuleConfig:
    """``explain`` section of params.yaml."""

    max_depth: int = 4
    min_samples_leaf: int = 2
    criterion: str = "gini"
    seed: int = 42
    depth_curve: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8)

    def __post_init__(self) -> None:
        if self.max_depth < 1 or self.min_samples_leaf < 1:
            raise ValueError("max_depth and min_samples_leaf must be >= 1")
        if self.criterion not in ("gini", "entropy", "log_loss"):
            raise ValueError(f"criterion {self.criterion!r} is not one of gini, entropy, log_loss")


def fit_tree(features: np.ndarray, target: np.ndarray, config: RuleConfig, depth: int | None = None) -> Tree:
    """One tree for a boolean target, exported to plain arrays."""
    model = DecisionTreeClassifier(max_depth=depth or config.max_depth,
                                   min_samples_leaf=config.min_samples_leaf,
                                   criterion=config.criterion, random_state=config.seed)  # fmt: skip
    model.fit(features, target.astype(int))
    tree = model.tree_
    value = tree.value[:, 0, :]  # per node: class shares (sklearn ≥1.4 stores fractions)
    value = value / np.clip(value.sum(axis=1, keepdims=True), 1e-12, None)
    positive = value[:, 1] if value.shape[1] > 1 else np.full(len(value), float(target.all()))
    return Tree({"children_left": tree.children_left, "children_right": tree.children_right,
                 "feature": np.where(tree.feature < 0, 0, tree.feature), "threshold": tree.threshold,
                 "positive": positive, "samples": tree.n_node_samples})  # fmt: skip


def fidelity(tree: Tree, features: np.ndarray, target: np.ndarray) -> float:
    """Share of rows where the tree's vote equals the network's decision."""
    return float((tree.predict(features) == target.astype(bool)).mean())


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
        entry = {"rule": rule_text(conditions), "conditions": [c.to_dict() for c in conditions],
                 "coverage": round(float(fires.mean()), 4),
                 "precision": round(float(target[fires].mean()), 4) if fires.any() else None,
                 "votes": tree.leaf_votes(nodes[-1])}  # fmt: skip
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


def patterns(features: np.ndarray, predicted: np.ndarray, classes: Sequence[str]) -> dict[str, list[float]]:
    """Characteristic pattern of each class: the centroid of the faces the network assigns to it
    (the overall centroid when it assigns none)."""
    out = {}
    for index, name in enumerate(classes):
        members = features[predicted == index]
        out[name] = (members if len(members) else features).mean(axis=0).round(6).tolist()
    return out


def rules_markdown(classes: Sequence[str], rules: dict[str, ClassRules], fid: dict[str, Any]) -> str:
    """The paper's "Extracted Rules" table, with fidelity and per-rule coverage / precision."""
    lines = ["# Extracted rules", "",
             ("Per class, a depth-limited decision tree on the 512 penultimate features learns the "
             "network's own decision. `&` = AND, `||` = OR, `not` = NOT."), "",
             "| Decision | Rules | fidelity (test) | fidelity (train) |", "|---|---|---|---|"]  # fmt: skip
    for name in classes:
        lines.append(f"| {name} | {rules[name].text} | {fid['test'][name]:.2%} | {fid['train'][name]:.2%} |")
    lines += ["", f"Mean fidelity: test {fid['test_mean']:.2%}, train {fid['train_mean']:.2%}.", ""]
    for name in classes:
        lines += [f"## {name}", "", "| votes | rule | coverage | precision |", "|---|---|---|---|"]
        for r in rules[name].rules:
            precision = "–" if r["precision"] is None else f"{r['precision']:.2%}"
            lines.append(f"| {'yes' if r['votes'] else 'no'} | {r['rule']} | {r['coverage']:.2%} | {precision} |")
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
            label = f"{'YES' if votes else 'no'}\n{tree.positive[node]:.0%} of {tree.samples[node]}"
            color = "#9be39b" if votes else "#eeeeee"
        ax.text(x, -d, label, ha="center", va="center", fontsize=7, zorder=2,
                bbox={"boxstyle": "round", "fc": color, "ec": "grey"})  # fmt: skip
    ax.set_title(f"{name}: network says {name}? (left branch = condition true)")
    ax.set_xlim(-0.8, len(leaves) - 0.2)
    ax.set_ylim(-depth - 0.6, 0.6)
    ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
