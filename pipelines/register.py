"""Stage ``register``: log the serving bundle (ONNX in the onnx flavour, the PyTorch weights, the
rule trees) to the pipeline's MLflow run, register it once, and let the promotion gate decide
whether it becomes ``champion`` or stays ``challenger``. The decision is the stage output."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path

import yaml

from ferops import MODEL_NAME
from ferops.config import load_section, setup_logging, write_json
from ferops.data import read_csv
from ferops.registry import RegisterConfig, register_bundle, split_definition
from ferops.tracking import flatten, run_in_this_store, run_tags, tracking_uri

log = logging.getLogger("register")

MODEL_SECTIONS = [
    "prepare",
    "split",
    "augment",
    "fer2013",
    "pretrain",
    "train",
    "explain",
    "export",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--evaluation", type=Path, required=True)
    parser.add_argument("--served", type=Path, required=True, help="the served stage's metrics")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    setup_logging()

    section = RegisterConfig.from_section(load_section(args.params, "register"))
    params = yaml.safe_load(Path(args.params).read_text())
    flat = json.dumps(
        flatten({s: params[s] for s in MODEL_SECTIONS if s in params}), sort_keys=True
    )
    evaluation = json.loads(args.evaluation.read_text())
    ferplus = json.loads(args.served.read_text())["ferplus_publictest_crop_accuracy"]
    tags = {
        **run_tags("register"),
        "params_sha256": hashlib.sha256(flat.encode()).hexdigest(),
        "split_definition": split_definition(read_csv(args.split)),
        "test_macro_f1": f"{evaluation['macro_f1']:.6f}",
    }
    numbers = {f"test_{k}": float(v) for k, v in evaluation.items() if isinstance(v, int | float)}
    run_id = run_in_this_store(args.run, Path(args.params), MODEL_SECTIONS, numbers)
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    decision = register_bundle(
        args.bundle,
        args.weights,
        run_id,
        tags,
        evaluation["accuracy"],
        margin=section.margin,
        name=MODEL_NAME,
        ferplus_accuracy=ferplus,
        ferplus_max_drop=section.ferplus_max_drop,
    )
    write_json(args.out, decision)
    log.info("register: %s", decision)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
