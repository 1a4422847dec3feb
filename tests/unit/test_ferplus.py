"""FER+ votes: the join, the learning rule, the measuring rule and the soft-label loss, against
values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ferops.data import CLASSES
from ferops.ferplus import (
    CLASS_COLUMNS,
    NO_LABEL,
    VOTE_COLUMNS,
    join_votes,
    majority_labels,
    read_votes,
    vote_targets,
)
from ferops.training import FaceSet, soft_cross_entropy


def votes(**counts: int) -> np.ndarray:
    """One face's 10 votes from column names."""
    row = np.zeros(len(VOTE_COLUMNS), dtype=np.int16)
    for name, n in counts.items():
        row[VOTE_COLUMNS.index(name)] = n
    return row


def test_columns_map_onto_our_classes() -> None:
    assert [VOTE_COLUMNS[c] for c in CLASS_COLUMNS] == [
        "anger",
        "disgust",
        "fear",
        "happiness",
        "neutral",
        "sadness",
        "surprise",
    ]
    assert len(CLASS_COLUMNS) == len(CLASSES)


def test_majority_rule_leaves_out_ties_and_other_majorities() -> None:
    table = np.stack(
        [
            votes(happiness=7, neutral=3),  # Happy
            votes(fear=4, surprise=4, neutral=2),  # tie: out
            votes(contempt=6, anger=4),  # contempt majority: out
            votes(NF=5, sadness=3, unknown=2),  # not a face: out
            votes(unknown=4, sadness=3, anger=3),  # unknown majority: out
            votes(),  # no votes (FER+ dropped the face): out
            votes(anger=2, disgust=3, contempt=2, NF=1, sadness=2),  # Disgust
        ]
    )
    expected = [CLASSES.index("Happy")] + [NO_LABEL] * 5 + [CLASSES.index("Disgust")]
    assert majority_labels(table).tolist() == expected


def test_learning_rule_drops_contempt_unknown_nf_and_renormalises() -> None:
    table = np.stack(
        [
            votes(happiness=6, neutral=2, contempt=2),  # 8 of 10 on ours: 6/8, 2/8
            votes(NF=6, sadness=4),  # 4 of 10 on ours: does not learn
            votes(unknown=5, fear=5),  # exactly half: learns, all Fear
            votes(),  # no votes: does not learn
        ]
    )
    targets, learns = vote_targets(table)
    assert learns.tolist() == [True, False, True, False]
    expected = np.zeros(7)
    expected[CLASSES.index("Happy")], expected[CLASSES.index("Neutral")] = 0.75, 0.25
    assert targets[0] == pytest.approx(expected)
    assert targets[2][CLASSES.index("Fear")] == pytest.approx(1.0)
    assert targets[1].sum() == 0 and targets[3].sum() == 0
    assert targets[learns].sum(1) == pytest.approx([1.0, 1.0])


def test_join_by_path_in_array_order_zero_where_missing(tmp_path) -> None:
    csv = tmp_path / "votes.csv"
    header = "path,ferplus_file,rms," + ",".join(VOTE_COLUMNS)
    csv.write_text(
        header
        + "\ntrain/Angry/a.jpg,fer0001.png,1.2,2,0,0,1,7,0,0,0,0,0"
        + "\ntrain/Happy/b.jpg,fer0002.png,0.9,0,10,0,0,0,0,0,0,0,0\n"
    )
    table = read_votes(csv)
    joined = join_votes(table, ["train/Happy/b.jpg", "train/Fear/c.jpg", "train/Angry/a.jpg"], 3)
    assert joined.tolist() == [
        [0, 10, 0, 0, 0, 0, 0, 0, 0, 0],
        [0] * 10,
        [2, 0, 0, 1, 7, 0, 0, 0, 0, 0],
    ]
    with pytest.raises(ValueError, match="does not match"):
        join_votes(table, ["train/Happy/b.jpg"], count=2)


def test_votes_file_without_vote_columns_is_refused(tmp_path) -> None:
    csv = tmp_path / "votes.csv"
    csv.write_text("path,neutral\ntrain/Angry/a.jpg,3\n")
    with pytest.raises(ValueError, match="lacks the columns"):
        read_votes(csv)


def test_soft_cross_entropy_against_a_hand_computed_value() -> None:
    # logits (0, ln 2, ln 3, ...): softmax over 7 = e^z / (1 + 2 + 3 + 4 * 1)
    logits = torch.tensor([[0.0, math.log(2), math.log(3), 0, 0, 0, 0]])
    target = torch.tensor([[0.5, 0.25, 0.25, 0, 0, 0, 0]])
    total = 1 + 2 + 3 + 4
    hand = -(0.5 * math.log(1 / total) + 0.25 * math.log(2 / total) + 0.25 * math.log(3 / total))
    assert float(soft_cross_entropy(logits, target)) == pytest.approx(hand, rel=1e-6)


def test_soft_cross_entropy_of_smoothed_one_hot_equals_torch_cross_entropy() -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, 7)
    labels = np.array([0, 3, 6, 2, 2])
    faces = FaceSet([np.zeros((8, 8), np.uint8)] * 5, labels, resize=8)
    for smoothing in (0.0, 0.1):
        ours = soft_cross_entropy(logits, faces.target_rows(np.arange(5), smoothing))
        theirs = torch.nn.functional.cross_entropy(
            logits, torch.from_numpy(labels), label_smoothing=smoothing
        )
        assert float(ours) == pytest.approx(float(theirs), rel=1e-5)


def test_given_targets_are_learnt_as_they_are() -> None:
    targets = np.full((2, 7), 1 / 7, np.float32)
    faces = FaceSet([np.zeros((8, 8), np.uint8)] * 2, [1, 2], resize=8, targets=targets)
    assert faces.target_rows(np.array([1]), 0.1).numpy() == pytest.approx(targets[:1])
    with pytest.raises(ValueError, match="targets must be 2×7"):
        FaceSet([np.zeros((8, 8), np.uint8)] * 2, [1, 2], resize=8, targets=targets[:1])
