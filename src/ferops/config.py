"""Reading ``params.yaml`` sections and setting up logging for the stage scripts."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml


def load_section(path: str | Path, section: str) -> dict[str, Any]:
    """The ``section`` mapping of a params file; a missing section names the ones there are."""
    with open(path, encoding="utf-8") as handle:
        params = yaml.safe_load(handle) or {}
    if section not in params:
        raise KeyError(f"{path} has no section {section!r}; sections: {sorted(params)}")
    return params[section] or {}


def setup_logging(level: int = logging.INFO) -> None:
    """Plain timestamped logging for stage scripts (called from ``main``, never at import)."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def write_json(path: str | Path, payload: Any) -> None:
    """Write JSON with sorted keys and a trailing newline, creating folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
