"""MODEL_CARD.md is rendered from the metrics files (the card stage): its figures are the
committed metrics', and the interval it prints is the Wilson interval."""

from __future__ import annotations

import pytest

from ferops.model_card import figures, load_metrics, render, wilson
from tests.paths import ROOT

STAGES = ("prepare", "split", "evaluate", "crossval", "explain", "served")


def test_wilson_interval_matches_a_hand_computed_value() -> None:
    # 55 / 134 by hand: p = 0.41045, z² = 3.8416; centre (p + z²/2n) / (1 + z²/n) = 0.41295,
    # half-width z·sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n) = 0.08216 → 0.3308 … 0.4951
    lo, hi = wilson(55, 134)
    assert lo == pytest.approx(0.3308, abs=2e-4) and hi == pytest.approx(0.4951, abs=2e-4)
    assert wilson(0, 15)[0] == 0.0 and wilson(0, 0) == (0.0, 1.0)


def test_the_committed_card_states_the_committed_metrics() -> None:
    metrics = load_metrics({s: ROOT / "metrics" / f"{s}.json" for s in STAGES})
    template = (ROOT / "docs" / "model_card.template.md").read_text(encoding="utf-8")
    assert (ROOT / "MODEL_CARD.md").read_text(encoding="utf-8") == render(
        template, figures(metrics)
    )
    accuracy = metrics["evaluate"]["accuracy"]
    assert f"{100 * accuracy:.1f} %" in (ROOT / "MODEL_CARD.md").read_text(encoding="utf-8")


def test_a_template_asking_for_an_unknown_figure_is_refused() -> None:
    with pytest.raises(KeyError, match="no_such_figure"):
        render("accuracy {{no_such_figure}}", {"test_accuracy": "1 %"})
