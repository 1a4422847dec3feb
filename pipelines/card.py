"""Stage ``card``: ``MODEL_CARD.md`` from its template and this run's metrics files
(:mod:`ferops.model_card`); ``register`` logs the card with the version and takes the
registered description from it."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ferops.config import setup_logging
from ferops.model_card import figures, load_metrics, render

log = logging.getLogger("card")
STAGES = ("prepare", "split", "evaluate", "crossval", "explain", "served")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--template", type=Path, required=True)
    parser.add_argument("--prepare", type=Path, required=True)
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--evaluate", type=Path, required=True)
    parser.add_argument("--crossval", type=Path, required=True)
    parser.add_argument("--explain", type=Path, required=True)
    parser.add_argument("--served", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    setup_logging()

    metrics = load_metrics({stage: getattr(args, stage) for stage in STAGES})
    text = render(args.template.read_text(encoding="utf-8"), figures(metrics))
    args.out.write_text(text, encoding="utf-8")
    log.info("card: wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
