"""Metric code against a confusion matrix computed by hand."""

from __future__ import annotations

import pytest

from ferops.metrics import classification_metrics, confusion_matrix


def test_against_hand_computed_example() -> None:
    # 3 classes. true: 0 0 0 1 1 2 ; pred: 0 0 1 1 2 2
    classes = ("a", "b", "c")
    y_true, y_pred = [0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2]
    m = classification_metrics(y_true, y_pred, classes)
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["recall"] == {"a": pytest.approx(2 / 3, abs=1e-4), "b": 0.5, "c": 1.0}
    assert m["precision"] == {"a": 1.0, "b": 0.5, "c": 0.5}
    f1_a = 2 * 1.0 * (2 / 3) / (1.0 + 2 / 3)
    assert m["f1"]["a"] == pytest.approx(f1_a, abs=1e-4)
    assert m["macro_f1"] == pytest.approx((f1_a + 0.5 + 2 / 3) / 3)
    assert m["confusion_normalised"][0] == pytest.approx([2 / 3, 1 / 3, 0], abs=1e-4)
    assert m["support"] == {"a": 3, "b": 2, "c": 1}


def test_absent_class_gives_zero_not_nan() -> None:
    m = classification_metrics([0, 0], [0, 0], ("a", "b"))
    assert m["recall"]["b"] == 0.0 and m["precision"]["b"] == 0.0


def test_out_of_range_labels_are_rejected() -> None:
    with pytest.raises(ValueError, match="0..1"):
        confusion_matrix([0, 2], [0, 1], 2)
