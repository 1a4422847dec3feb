"""The promotion gate's rules on plain version records (the real-server path is in
tests/integration/test_registry.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ferops.registry import FERPLUS_TAG, promotion_gate


def champion(test: str = "0.400000", ferplus: str | None = "0.800000", split: str = "abc"):
    tags = {"split_definition": split, "test_accuracy": test}
    if ferplus is not None:
        tags[FERPLUS_TAG] = ferplus
    return SimpleNamespace(version="3", tags=tags)


def test_no_champion_promotes() -> None:
    assert promotion_gate(None, 0.1, "abc", 0.0, 0.5) == (True, "no champion yet")


@pytest.mark.parametrize(
    ("test", "ferplus", "promoted"),
    [
        (0.45, 0.80, True),  # better on SFEW, same on FER+
        (0.45, 0.781, True),  # FER+ drop 1.9 points: within 2
        (0.45, 0.779, False),  # FER+ drop 2.1 points: forgets FER+
        (0.39, 0.90, False),  # worse on SFEW: better FER+ does not buy it
        (0.40, 0.78, True),  # ties on SFEW, drop exactly 2 points: allowed
    ],
)
def test_both_margins_must_hold(test: float, ferplus: float, promoted: bool) -> None:
    promote, reason = promotion_gate(champion(), test, "abc", 0.0, ferplus, 0.02)
    assert promote is promoted, reason
    assert ("forgets FER+" in reason) is (ferplus < 0.78)


def test_ferplus_on_one_side_only_is_not_comparable() -> None:
    promote, reason = promotion_gate(champion(ferplus=None), 0.9, "abc", 0.0, 0.9)
    assert not promote and "promote by hand" in reason
    promote, reason = promotion_gate(champion(), 0.9, "abc", 0.0, None)
    assert not promote and "promote by hand" in reason
    promote, reason = promotion_gate(champion(ferplus="n/a"), 0.9, "abc", 0.0, 0.9)
    assert not promote and "promote by hand" in reason


def test_neither_side_measured_on_ferplus_is_judged_on_sfew_alone() -> None:
    assert promotion_gate(champion(ferplus=None), 0.41, "abc", 0.0)[0]
    assert not promotion_gate(champion(ferplus=None), 0.39, "abc", 0.0)[0]


def test_other_split_or_unreadable_test_figure_fails_closed() -> None:
    assert not promotion_gate(champion(split="zzz"), 0.99, "abc", 0.0, 0.99)[0]
    assert not promotion_gate(champion(test="nan"), 0.99, "abc", 0.0, 0.99)[0]
