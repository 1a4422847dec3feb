"""Per-face explanations from plain-array rule trees (numpy only: the serving side's half).

The ``explain`` stage fits one depth-limited tree per class on the 512 penultimate features, with
the *network's own decision* (predicted class == c) as target, and saves every tree as arrays in
JSON. Here those arrays become :class:`Tree` objects again — nothing is unpickled — and
:class:`Explainer` gives the four parts of Gedeon & Turner's explanation for one face:

1. the characteristic pattern most like the input, and how similar it is;
2. the inputs important for this output (the features on the decision path, their values and
   the pattern's values);
3. the rules that fired for the predicted class, and whether the tree agrees with the network;
4. the next most likely class, its probability, and the rule it would have needed.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

LEAF = -1


@dataclass(frozen=True)
class Condition:
    """``feature{index+1} <= threshold`` (``le``) or ``> threshold`` (not ``le``)."""

    feature: int
    threshold: float
    le: bool

    def holds(self, x: np.ndarray) -> bool:
        return bool(x[self.feature] <= self.threshold) == self.le

    def text(self) -> str:
        return f"(feature{self.feature + 1} {'≤' if self.le else '>'} {self.threshold:.3f})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": f"feature{self.feature + 1}",
            "op": "<=" if self.le else ">",
            "threshold": round(self.threshold, 6),
        }


def simplify(conditions: list[Condition]) -> list[Condition]:
    """Keep only the tightest bound per feature and direction, in first-seen order."""
    tightest: dict[tuple[int, bool], Condition] = {}
    for cond in conditions:
        key = (cond.feature, cond.le)
        old = tightest.get(key)
        if old is None or (
            cond.threshold < old.threshold if cond.le else cond.threshold > old.threshold
        ):
            tightest[key] = cond
    seen, out = set(), []
    for cond in conditions:
        key = (cond.feature, cond.le)
        if key not in seen:
            seen.add(key)
            out.append(tightest[key])
    return out


def rule_text(conditions: list[Condition]) -> str:
    """The paper's notation: conditions joined by ``&``."""
    return " & ".join(c.text() for c in conditions) if conditions else "(always)"


class Tree:
    """A binary decision tree held as plain arrays (sklearn's layout), for one class."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.left = np.asarray(data["children_left"], dtype=np.int64)
        self.right = np.asarray(data["children_right"], dtype=np.int64)
        self.feature = np.asarray(data["feature"], dtype=np.int64)
        self.threshold = np.asarray(data["threshold"], dtype=np.float64)
        #: Share of the network's "this class" decisions among training samples in each node.
        self.positive = np.asarray(data["positive"], dtype=np.float64)
        self.samples = np.asarray(data["samples"], dtype=np.int64)
        n = len(self.left)
        if not (
            len(self.right) == len(self.feature) == len(self.threshold) == len(self.positive) == n
        ):
            raise ValueError("tree arrays have different lengths")
        inner = self.left != LEAF
        if ((self.left[inner] <= 0) | (self.left[inner] >= n) | (self.right[inner] >= n)).any():
            raise ValueError("tree arrays point outside the tree")

    def to_dict(self) -> dict[str, Any]:
        return {
            "children_left": self.left.tolist(),
            "children_right": self.right.tolist(),
            "feature": self.feature.tolist(),
            "threshold": self.threshold.tolist(),
            "positive": self.positive.tolist(),
            "samples": self.samples.tolist(),
        }

    def path(self, x: np.ndarray) -> list[int]:
        """Node ids from the root to the leaf ``x`` falls in."""
        node, nodes = 0, [0]
        while self.left[node] != LEAF:
            node = (
                self.left[node]
                if x[self.feature[node]] <= self.threshold[node]
                else self.right[node]
            )
            nodes.append(int(node))
        return nodes

    def leaf_votes(self, leaf: int) -> bool:
        """A leaf votes for the class when most of its training samples were that class."""
        return bool(self.positive[leaf] > 0.5)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Boolean votes for each row of ``features`` (N×512)."""
        features = np.atleast_2d(features)
        return np.array([self.leaf_votes(self.path(x)[-1]) for x in features])

    def conditions(self, nodes: list[int]) -> list[Condition]:
        """The split conditions along a root-to-leaf path."""
        out = []
        for node, child in itertools.pairwise(nodes):
            out.append(
                Condition(
                    int(self.feature[node]),
                    float(self.threshold[node]),
                    bool(child == self.left[node]),
                )
            )
        return out

    def leaves(self) -> list[list[int]]:
        """Every root-to-leaf path, left first."""
        paths, stack = [], [[0]]
        while stack:
            nodes = stack.pop()
            node = nodes[-1]
            if self.left[node] == LEAF:
                paths.append(nodes)
            else:
                stack.append(nodes + [int(self.right[node])])
                stack.append(nodes + [int(self.left[node])])
        return paths


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


#: The rule trees, their text and the class patterns: the ``explain`` stage's output file, also
#: inside every bundle (written by :func:`ferops.rules.save_rules`, read by :class:`Explainer`).
RULES_FILE = "rules.json"


class Explainer:
    """The four-part explanation, from a ``rules.json`` written by the ``explain`` stage."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.classes: list[str] = list(data["classes"])
        self.trees = {c: Tree(data["trees"][c]) for c in self.classes}
        self.patterns = {
            c: np.asarray(data["patterns"][c], dtype=np.float64) for c in self.classes
        }

    @classmethod
    def load(cls, path: str | Path) -> Explainer:
        return cls(json.loads(Path(path).read_text(encoding="utf-8")))

    def explain(self, features: np.ndarray, logits: np.ndarray) -> dict[str, Any]:
        """Explain one face from its 512 features and 7 logits."""
        x = np.asarray(features, dtype=np.float64).ravel()
        probs = softmax(np.asarray(logits).ravel())
        order = np.argsort(-probs)
        predicted, runner_up = self.classes[order[0]], self.classes[order[1]]

        similarity = {c: _cosine(x, p) for c, p in self.patterns.items()}
        nearest = max(similarity, key=similarity.get)

        tree = self.trees[predicted]
        nodes = tree.path(x)
        conditions = simplify(tree.conditions(nodes))
        pattern = self.patterns[predicted]
        important = [
            {
                **c.to_dict(),
                "value": round(float(x[c.feature]), 6),
                "pattern_value": round(float(pattern[c.feature]), 6),
            }
            for c in conditions
        ]
        agrees = tree.leaf_votes(nodes[-1])

        next_tree = self.trees[runner_up]
        needed = self._closest_positive_rule(next_tree, x)
        return {
            "predicted": predicted,
            "probability": round(float(probs[order[0]]), 6),
            "nearest_pattern": {
                "class": nearest,
                "similarity": round(similarity[nearest], 6),
                "similarity_to_predicted": round(similarity[predicted], 6),
            },
            "important_inputs": important,
            "rules_fired": {
                "class": predicted,
                "rule": rule_text(conditions),
                "tree_agrees": agrees,
                "leaf_precision": round(float(tree.positive[nodes[-1]]), 4),
            },
            "next_most_likely": {
                "class": runner_up,
                "probability": round(float(probs[order[1]]), 6),
                **needed,
            },
        }

    @staticmethod
    def _closest_positive_rule(tree: Tree, x: np.ndarray) -> dict[str, Any]:
        """The positive leaf of ``tree`` whose rule ``x`` misses by the fewest conditions."""
        best = None
        for nodes in tree.leaves():
            if not tree.leaf_votes(nodes[-1]):
                continue
            conditions = simplify(tree.conditions(nodes))
            missed = [c for c in conditions if not c.holds(x)]
            key = (len(missed), -tree.samples[nodes[-1]])
            if best is None or key < best[0]:
                best = (key, conditions, missed)
        if best is None:
            return {"rule_needed": None, "conditions_missed": []}
        _, conditions, missed = best
        return {
            "rule_needed": rule_text(conditions),
            "conditions_missed": [
                c.to_dict() | {"value": round(float(x[c.feature]), 6)} for c in missed
            ],
        }


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / denom) if denom else 0.0
