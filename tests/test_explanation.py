"""Rule trees: a known threshold rule is recovered, JSON round-trips exactly, and the per-face
explanation returns all four parts consistently with the trees."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.tree import DecisionTreeClassifier

from ferops.data import CLASSES
from ferops.explanation import Explainer, Tree, softmax
from ferops.rules import RuleConfig, class_rules, fidelity, fit_tree, patterns


@pytest.fixture(scope="module")
def synthetic() -> tuple[np.ndarray, np.ndarray]:
    """512 features; the 'network' says Happy exactly when feature11 > 0.7, Sad when
    feature300 <= 0.2 (and not Happy), else a random other class."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(600, 512))
    predicted = rng.choice([0, 1, 2, 4, 6], size=600)
    predicted[x[:, 299] <= 0.2] = CLASSES.index("Sad")
    predicted[x[:, 10] > 0.7] = CLASSES.index("Happy")
    return x, predicted


def test_known_threshold_rule_is_recovered(synthetic) -> None:
    x, predicted = synthetic
    target = predicted == CLASSES.index("Happy")
    tree = fit_tree(x, target, RuleConfig(max_depth=2))
    assert fidelity(tree, x, target) == 1.0
    rules = class_rules(tree, x, target)
    voting = [r for r in rules.rules if r["votes"]]
    assert len(voting) == 1 and len(voting[0]["conditions"]) == 1
    cond = voting[0]["conditions"][0]
    assert cond["feature"] == "feature11" and cond["op"] == ">"
    assert cond["threshold"] == pytest.approx(0.7, abs=0.02)
    assert voting[0]["precision"] == 1.0
    assert voting[0]["coverage"] == pytest.approx(target.mean(), abs=1e-3)
    assert "feature11 >" in rules.text


def test_json_round_trip_gives_identical_decisions(synthetic) -> None:
    x, predicted = synthetic
    target = predicted == CLASSES.index("Sad")
    config = RuleConfig(max_depth=4, min_samples_leaf=3)
    tree = fit_tree(x, target, config)
    again = Tree(json.loads(json.dumps(tree.to_dict())))
    np.testing.assert_array_equal(tree.predict(x), again.predict(x))
    reference = DecisionTreeClassifier(max_depth=4, min_samples_leaf=3, random_state=config.seed)
    reference.fit(x, target.astype(int))
    np.testing.assert_array_equal(again.predict(x), reference.predict(x).astype(bool))


def test_corrupt_tree_arrays_are_rejected() -> None:
    bad = {"children_left": [5, -1, -1], "children_right": [2, -1, -1], "feature": [0, 0, 0],
           "threshold": [0.5, 0, 0], "positive": [0.5, 1, 0], "samples": [2, 1, 1]}  # fmt: skip
    with pytest.raises(ValueError, match="outside"):
        Tree(bad)


@pytest.fixture(scope="module")
def explainer(synthetic) -> Explainer:
    x, predicted = synthetic
    config = RuleConfig(max_depth=3)
    trees = {c: fit_tree(x, predicted == i, config).to_dict() for i, c in enumerate(CLASSES)}
    data = {"classes": list(CLASSES), "trees": trees, "patterns": patterns(x, predicted, CLASSES)}
    return Explainer(json.loads(json.dumps(data)))


def test_explanation_has_four_consistent_parts(explainer: Explainer, synthetic) -> None:
    x, _ = synthetic
    rng = np.random.default_rng(1)
    for row in x[:40]:
        logits = rng.normal(size=len(CLASSES))
        out = explainer.explain(row, logits)
        probs = softmax(logits)
        order = np.argsort(-probs)
        assert out["predicted"] == CLASSES[order[0]]
        # 1. nearest characteristic pattern
        assert out["nearest_pattern"]["class"] in CLASSES
        assert -1 <= out["nearest_pattern"]["similarity"] <= 1
        # 2. important inputs: the features on the predicted class's decision path
        assert out["important_inputs"]
        for item in out["important_inputs"]:
            assert item["feature"].startswith("feature") and "pattern_value" in item
        # 3. rules fired agree with the tree's own predict
        tree = explainer.trees[out["predicted"]]
        assert out["rules_fired"]["tree_agrees"] == bool(tree.predict(row)[0])
        # 4. next most likely = second-highest probability
        assert out["next_most_likely"]["class"] == CLASSES[order[1]]
        assert out["next_most_likely"]["probability"] == pytest.approx(probs[order[1]], abs=1e-6)


def test_important_inputs_hold_for_the_input(explainer: Explainer, synthetic) -> None:
    x, _ = synthetic
    logits = np.zeros(len(CLASSES))
    logits[CLASSES.index("Happy")] = 5
    out = explainer.explain(x[0], logits)
    for item in out["important_inputs"]:
        value, threshold = item["value"], item["threshold"]
        assert (value <= threshold) if item["op"] == "<=" else (value > threshold)
