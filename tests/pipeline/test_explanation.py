"""Rule trees: a known threshold rule is recovered, JSON round-trips exactly, the per-face
explanation returns all four parts consistently with the trees, more of the oracle's answers give
rules that agree with it more on new inputs, and the explain stage fits on a real network's
answers for real faces."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from sklearn.tree import DecisionTreeClassifier

from ferops.data import CLASSES, load_gray, write_csv
from ferops.explanation import LEAF, Explainer, Tree, softmax
from ferops.fer2013 import load_paths
from ferops.model import FEATURES, FerResNet, save_checkpoint
from ferops.rules import (
    RuleConfig,
    ask_network,
    class_rules,
    classifier_inputs,
    fidelity,
    fit_tree,
    oracle_faces,
    patterns,
    truncate,
)
from ferops.tracking import start_run
from ferops.training import seed_everything
from tests.bundles import META


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
    bad = {
        "children_left": [5, -1, -1],
        "children_right": [2, -1, -1],
        "feature": [0, 0, 0],
        "threshold": [0.5, 0, 0],
        "positive": [0.5, 1, 0],
        "samples": [2, 1, 1],
    }
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


def test_explanation_flags_rules_that_disagree_with_the_network(
    explainer: Explainer, synthetic
) -> None:
    """The synthetic 'network' says Happy only when feature11 > 0.7: a face it calls Happy below
    that is flagged (``tree_agrees`` false), one above it is not."""
    x, _ = synthetic
    logits = np.zeros(len(CLASSES))
    logits[CLASSES.index("Happy")] = 5
    below = x[(x[:, 10] < 0.5) & (x[:, 299] > 0.3)][0]
    above = x[x[:, 10] > 0.8][0]
    assert explainer.explain(below, logits)["rules_fired"]["tree_agrees"] is False
    assert explainer.explain(above, logits)["rules_fired"]["tree_agrees"] is True


def test_more_oracle_answers_give_rules_that_agree_more_on_new_inputs() -> None:
    """TREPAN's argument: the 'network' (an oblique boundary the trees can only approximate) is
    asked about more inputs → the depth-4 tree agrees with it more on inputs it never saw."""
    rng = np.random.default_rng(7)

    def network(x: np.ndarray) -> np.ndarray:
        return x[:, 3] + 0.5 * x[:, 40] - x[:, 100] > 0.3

    new = rng.uniform(0, 1, (2000, 512))
    scores = []
    for count in (100, 3000):
        asked = rng.uniform(0, 1, (count, 512))
        tree = fit_tree(asked, network(asked), RuleConfig(max_depth=4))
        scores.append(fidelity(tree, new, network(new)))
    assert scores[1] > scores[0] + 0.05, scores
    assert scores[1] > 0.85, scores


def test_a_deep_tree_cut_at_a_depth_is_the_tree_fitted_to_that_depth(synthetic) -> None:
    x, predicted = synthetic
    config = RuleConfig(max_depth=6)
    for name in ("Angry", "Sad"):
        target = predicted == CLASSES.index(name)
        deep = fit_tree(x[:400], target[:400], config)
        for depth in (1, 2, 3, 4):
            shallow = fit_tree(x[:400], target[:400], config, depth)
            cut = truncate(deep, depth)
            assert max(len(n) for n in cut.leaves()) - 1 <= depth
            np.testing.assert_array_equal(cut.predict(x), shallow.predict(x))


def test_rule_config_rejects_unknown_and_bad_knobs() -> None:
    with pytest.raises(TypeError):
        RuleConfig(fer2013_face=10)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="fer2013_faces"):
        RuleConfig(fer2013_faces=-1)


def _real_faces(fer_root: Path, split: str, count: int) -> np.ndarray:
    """``count`` real FER2013 faces spread over the classes, as 64 px chips."""
    paths, _ = load_paths(fer_root, split)
    picked = paths[:: max(1, len(paths) // count)][:count]
    return np.stack([cv2.resize(load_gray(p), (64, 64)) for p in picked])


def test_trees_split_only_on_the_columns_they_are_given(synthetic) -> None:
    """fit_tree(columns=…): splits on those features only, indices still of all 512 columns."""
    x, predicted = synthetic
    target = predicted == CLASSES.index("Happy")
    tree = fit_tree(x, target, RuleConfig(max_depth=2), columns=np.array([3, 10, 299]))
    assert fidelity(tree, x, target) == 1.0
    assert "feature11 >" in class_rules(tree, x, target).text
    inner = tree.left != LEAF
    assert set(tree.feature[inner]) <= {3, 10, 299}
    blind = fit_tree(x, target, RuleConfig(max_depth=2), columns=np.array([3, 299]))
    assert set(blind.feature[blind.left != LEAF]) <= {3, 299}
    assert fidelity(blind, x, target) < 0.9  # the one feature that decides is out of reach


def test_classifier_inputs_are_the_features_with_a_weight() -> None:
    model = FerResNet()
    assert len(classifier_inputs(model)) == FEATURES
    with torch.no_grad():
        model.net.fc.weight.zero_()
        model.net.fc.weight[2, 40] = 0.5
        model.net.fc.weight[5, [7, 40]] = -1.0
    np.testing.assert_array_equal(classifier_inputs(model), [7, 40])


@pytest.mark.parametrize("sparse", [False, True])
def test_explain_stage_fits_on_the_networks_answers(
    tmp_path: Path, fer_root: Path, monkeypatch: pytest.MonkeyPatch, sparse: bool
) -> None:
    """The stage on small real inputs: a real (random-weight) checkpoint, real FER2013 faces as
    the fer2013 array and as augmented SFEW-format chips, test features from the same network.
    With a sparse classifier (train.head_features) the trees split only on what it reads."""
    from pipelines import explain

    seed_everything(0)
    model = FerResNet().eval()
    reads = np.arange(FEATURES) if not sparse else np.array([3, 77, 200, 401, 402, 511])
    with torch.no_grad():
        keep = torch.zeros(FEATURES)
        keep[torch.from_numpy(reads)] = 1.0
        model.net.fc.weight.mul_(keep)
    save_checkpoint(tmp_path / "model.pt", model, META)
    faces = _real_faces(fer_root, "train", 42)
    np.savez(tmp_path / "fer2013.npz", x_train=faces[:30], y_train=np.zeros(30, np.int64))
    augmented = tmp_path / "augmented"
    augmented.mkdir()
    for i, face in enumerate(faces[30:]):
        cv2.imwrite(str(augmented / f"{i}.png"), face)
    write_csv(
        augmented / "augmented.csv", [{"path": f"{i}.png", "label_index": 0} for i in range(12)]
    )
    test_faces = _real_faces(fer_root, "publictest", 25)
    x_test, p_test = ask_network(model, list(test_faces), META["resize"], META["input_size"])
    write_csv(
        tmp_path / "features.csv",
        [
            {
                "image_id": i,
                "split": "test",
                "predicted_label": CLASSES[p],
                **{f"feature{j + 1}": float(v) for j, v in enumerate(row)},
            }
            for i, (row, p) in enumerate(zip(x_test, p_test, strict=True))
        ],
    )
    section = {
        "max_depth": 2,
        "min_samples_leaf": 1,
        "criterion": "gini",
        "seed": 1,
        "depth_curve": [1, 2, 3],
        "fer2013_faces": 20,
        "flip": True,
        "device": "cpu",
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"explain": section}))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    start_run(tmp_path / "run.json", "explain-test", {"stage": "test"})

    args = [
        "--params",
        str(tmp_path / "params.yaml"),
        "--model",
        str(tmp_path / "model.pt"),
        "--augmented",
        str(augmented),
        "--fer2013",
        str(tmp_path / "fer2013.npz"),
        "--features",
        str(tmp_path / "features.csv"),
        "--run",
        str(tmp_path / "run.json"),
        "--out",
        str(tmp_path / "rules"),
        "--metrics",
        str(tmp_path / "explain.json"),
        "--plots",
        str(tmp_path / "plots"),
    ]
    assert explain.main(args) == 0

    metrics = json.loads((tmp_path / "explain.json").read_text())
    assert metrics["fitted_on"] == 12 + 20 + 20 and metrics["scored_on"] == 25
    by_source = {"sfew_augmented": 12, "fer2013": 20, "fer2013_flip": 20}
    assert metrics["fitted_on_by_source"] == by_source
    assert metrics["max_conditions"] <= 2
    assert [c["depth"] for c in metrics["depth_curve"]] == [1, 2, 3]
    assert metrics["classifier_features"] == len(reads)
    # the shipped trees, read back by the serving side, score the test split as the metrics say
    explainer = Explainer.load(tmp_path / "rules" / "rules.json")
    for index, name in enumerate(CLASSES):
        tree = explainer.trees[name]
        expected = fidelity(tree, x_test, p_test == index)
        assert metrics["fidelity_test"][name] == pytest.approx(expected, abs=1e-4)
        assert set(tree.feature[tree.left != LEAF]) <= set(reads.tolist())
    mean = np.mean(list(metrics["fidelity_test"].values()))
    assert metrics["fidelity_test_mean"] == pytest.approx(mean, abs=1e-3)
    out = explainer.explain(x_test[0], np.eye(len(CLASSES))[p_test[0]] * 5)
    assert out["predicted"] == CLASSES[p_test[0]]
    # the oracle set: augmented chips first, then the picked FER2013 faces and their mirrors
    config = RuleConfig(fer2013_faces=20, seed=1)
    asked, sources = oracle_faces(list(faces[30:]), faces[:30], config)
    assert len(asked) == 52 and sources.count("fer2013_flip") == 20
    np.testing.assert_array_equal(asked[32], asked[12][:, ::-1])
    assert x_test.shape == (25, FEATURES)
