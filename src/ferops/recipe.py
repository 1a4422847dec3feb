"""The ``train`` section of params.yaml as a recipe (shared by the train and crossval stages)."""

from __future__ import annotations

from typing import Any

from ferops.training import INITS, TrainConfig


def train_recipe(section: dict[str, Any]) -> tuple[str, TrainConfig]:
    """Split the ``train`` section into its ``init`` (scratch | fer2013) and a ``TrainConfig``."""
    section = dict(section)
    init = section.pop("init", "fer2013")
    if init not in INITS:
        raise ValueError(f"train.init {init!r} is not one of {INITS}")
    return init, TrainConfig.from_dict(section)
