"""Small real serving bundles for tests: an exported random-weight network, real rule trees."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ferops.data import CLASSES
from ferops.export import build_bundle, export_onnx
from ferops.faces import YUNET_FILE
from ferops.model import FerResNet, save_checkpoint
from ferops.rules import RuleConfig, class_rules, fit_tree, patterns, save_rules
from ferops.training import seed_everything

#: A fast bundle: 32 px input, YuNet detection (the shipped face code), 64 px chips.
META: dict[str, Any] = {
    "classes": list(CLASSES),
    "input_size": 32,
    "resize": 36,
    "mean": 127.5,
    "std": 127.5,
    "faces": {"cascade": [{"detector": "yunet"}], "size": 64},
}
#: The YuNet model every bundle carries (pulled by `make setup` with the zoo data).
YUNET = Path(__file__).resolve().parents[1] / "data" / "raw" / "zoo" / YUNET_FILE


def make_bundle(folder: Path, seed: int, meta: dict[str, Any] = META) -> tuple[Path, Path]:
    """A real exported bundle whose weights depend on ``seed``; returns (bundle, weights)."""
    seed_everything(seed)
    model = FerResNet().eval()
    folder.mkdir(parents=True)
    export_onnx(model, meta["input_size"], folder / "model.onnx")
    save_checkpoint(folder / "model.pt", model, meta)
    rng = np.random.default_rng(seed)
    x, predicted = rng.uniform(0, 1, (100, 512)), rng.integers(0, 7, 100)
    trees = {
        c: fit_tree(x, predicted == i, RuleConfig(max_depth=2)) for i, c in enumerate(CLASSES)
    }
    texts = {c: class_rules(trees[c], x, predicted == i) for i, c in enumerate(CLASSES)}
    rules = save_rules(folder, CLASSES, trees, texts, patterns(x, predicted, CLASSES))
    build_bundle(folder / "bundle", folder / "model.onnx", meta, rules, YUNET)
    return folder / "bundle", folder / "model.pt"


def register_tiny(
    tracking_uri: str,
    folder: Path,
    seed: int,
    name: str,
    experiment: str,
    params: dict[str, str] | None = None,
) -> tuple[Path, str, dict[str, Any]]:
    """A :func:`make_bundle` registered in a real MLflow server from a fresh run of
    ``experiment`` (test accuracy 0.4); returns the bundle, the run id and the gate's decision."""
    import mlflow

    from ferops.registry import register_bundle

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    bundle, weights = make_bundle(folder, seed)
    with mlflow.start_run() as run:
        mlflow.log_params(params or {})
    decision = register_bundle(
        bundle, weights, run.info.run_id, {"split_definition": "s"}, 0.4, name=name
    )
    return bundle, run.info.run_id, decision
