"""Grouped, stratified, seeded splits: no clip ever sits in two splits or two folds."""

from __future__ import annotations

import numpy as np
import pytest

from ferops.data import CLASSES
from ferops.splits import SplitConfig, assign_splits, check_no_leak, split_metrics


def _rows(seed: int = 0, clips: int = 150) -> list[dict]:
    """Synthetic frames: clips of 1–6 frames, a few clips spanning two classes (as in SFEW)."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(clips):
        label = int(rng.integers(0, len(CLASSES)))
        for f in range(int(rng.integers(1, 7))):
            lab = label if rng.random() > 0.1 else (label + 1) % len(CLASSES)
            rows.append(
                {
                    "image_id": f"{CLASSES[lab]}/m{c % 20}_{c:06d}_{f:08d}",
                    "label": CLASSES[lab],
                    "label_index": lab,
                    "movie": f"m{c % 20}",
                    "clip": f"m{c % 20}_{c:06d}",
                }
            )
    return rows


def test_no_clip_in_two_splits_or_folds() -> None:
    out = assign_splits(_rows(), SplitConfig())
    check_no_leak(out)  # raises on a leak
    clips = {}
    for row in out:
        assert clips.setdefault(row["clip"], (row["split"], row["fold"])) == (
            row["split"],
            row["fold"],
        )


def test_sizes_follow_the_fractions_and_every_class_is_tested() -> None:
    out = assign_splits(_rows(), SplitConfig(test_size=0.2, val_size=0.15))
    share = {s: sum(r["split"] == s for r in out) / len(out) for s in ("train", "val", "test")}
    assert share["test"] == pytest.approx(0.2, abs=0.06)
    assert share["val"] == pytest.approx(0.15, abs=0.06)
    metrics = split_metrics(out)
    assert all(n > 0 for n in metrics["splits"]["test"]["per_class"].values())
    assert sorted(metrics["fold_sizes"]) == ["0", "1", "2", "3", "4"]


def test_same_seed_same_split_other_seed_other_split() -> None:
    rows = _rows()
    a = [r["split"] for r in assign_splits(rows, SplitConfig(seed=1))]
    b = [r["split"] for r in assign_splits(rows, SplitConfig(seed=1))]
    c = [r["split"] for r in assign_splits(rows, SplitConfig(seed=2))]
    assert a == b and a != c


def test_group_by_movie_keeps_movies_whole() -> None:
    out = assign_splits(_rows(), SplitConfig(group_by="movie", test_size=0.25))
    check_no_leak(out, "movie")


def test_leak_is_detected() -> None:
    rows = [{"clip": "a", "split": "train", "fold": 0}, {"clip": "a", "split": "test", "fold": 0}]
    with pytest.raises(AssertionError, match="more than one split"):
        check_no_leak(rows)


def test_bad_config_names_valid_options() -> None:
    with pytest.raises(ValueError, match="clip"):
        SplitConfig(group_by="frame")


def test_the_selection_protocol_never_puts_a_test_face_in_a_fold() -> None:
    out = assign_splits(_rows(), SplitConfig())
    assert all(r["fold"] == -1 for r in out if r["split"] == "test")
    assert {r["fold"] for r in out if r["split"] != "test"} == {0, 1, 2, 3, 4}
    clip = next(r["clip"] for r in out if r["split"] == "test")
    tampered = [{**r, "fold": 0} if r["clip"] == clip else dict(r) for r in out]
    with pytest.raises(AssertionError, match="test faces in a selection fold"):
        check_no_leak(tampered)


def test_crossval_inputs_never_load_a_test_face(tmp_path) -> None:
    import cv2
    import yaml

    from ferops.crossval import load_fold_inputs
    from ferops.data import write_csv

    out = assign_splits(_rows(clips=60), SplitConfig())
    for row in out:
        row["crop"] = f"{row['image_id']}.png"
        if row["split"] != "test":  # test crops do not even exist: loading one would fail
            (tmp_path / "faces" / row["label"]).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(tmp_path / "faces" / row["crop"]), np.zeros((8, 8), np.uint8))
    write_csv(tmp_path / "split.csv", out)
    params = {
        "train": {"init": "scratch", "epochs": 1, "input_size": 8, "resize": 8},
        "augment": {"ops": ["original"], "factor": 1.15},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    data = load_fold_inputs(
        tmp_path / "params.yaml",
        tmp_path / "split.csv",
        tmp_path / "faces",
        tmp_path / "none.pt",
        tmp_path / "none.npz",
        tmp_path / "none.npz",
        tmp_path / "none.npz",
    )
    test_ids = {r["image_id"] for r in out if r["split"] == "test"}
    assert test_ids and not test_ids & {r["image_id"] for r in data.rows}
    assert len(data.rows) == len(out) - len(test_ids) and (data.folds >= 0).all()


def test_paired_difference_wins_only_beyond_the_fold_noise() -> None:
    from ferops.crossval import paired_difference

    steady = paired_difference([0.50, 0.52, 0.48, 0.55, 0.50], [0.45, 0.47, 0.46, 0.50, 0.44])
    assert steady["wins"] and steady["mean"] == pytest.approx(0.046)
    noisy = paired_difference([0.60, 0.40, 0.55, 0.38, 0.52], [0.45, 0.47, 0.46, 0.50, 0.44])
    assert not noisy["wins"] and noisy["mean"] > 0  # higher on average, not beyond the noise
    assert not paired_difference([0.5, 0.5], [0.5, 0.5])["wins"]
    with pytest.raises(ValueError):
        paired_difference([0.5], [0.4])
