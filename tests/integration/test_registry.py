"""Registry against a real `mlflow server`: idempotent registration, the promotion gate,
`models:/…@champion` answers images like `/predict` (also through `mlflow models predict`), the
model card and descriptions, and the ferops experiment marked as model training."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from ferops.images import read_image
from ferops.inference import Predictor
from tests.bundles import make_bundle
from tests.paths import ROOT


@pytest.fixture()
def registry(mlflow_server: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("registry-tests")
    return f"ferops-test-{request.node.name[-20:]}"


def _run_id(metrics: dict[str, float] | None = None) -> str:
    import mlflow

    with mlflow.start_run() as run:
        if metrics:
            mlflow.log_metrics(metrics)
        return run.info.run_id


def test_register_twice_is_one_version_and_gate_decides(
    registry: str, tmp_path: Path, clear_frame: Path
) -> None:
    from mlflow.tracking import MlflowClient

    from ferops.registry import register_bundle

    name = registry
    tags = {"split_definition": "abc", "git_commit": "test"}
    first, weights = make_bundle(tmp_path / "a", seed=1)
    d1 = register_bundle(first, weights, _run_id(), tags, test_accuracy=0.40, name=name)
    assert (d1["action"], d1["alias"], d1["version"]) == ("registered", "champion", 1)
    again = register_bundle(first, weights, _run_id(), tags, test_accuracy=0.40, name=name)
    assert again["action"] == "unchanged" and again["version"] == 1
    assert again["aliases"] == ["champion"]
    client = MlflowClient()
    assert len(client.search_model_versions(f"name='{name}'")) == 1

    worse, w2 = make_bundle(tmp_path / "b", seed=2)
    d2 = register_bundle(worse, w2, _run_id(), tags, test_accuracy=0.35, name=name)
    assert (d2["alias"], d2["champion"]) == ("challenger", 1)
    assert client.get_model_version_by_alias(name, "champion").version == "1"
    assert "<" in d2["reason"]

    better, w3 = make_bundle(tmp_path / "c", seed=3)
    d3 = register_bundle(better, w3, _run_id(), tags, test_accuracy=59 / 131, name=name)
    assert (d3["alias"], d3["version"]) == ("champion", 3)
    assert client.get_model_version_by_alias(name, "champion").version == "3"

    other_split, w4 = make_bundle(tmp_path / "d", seed=4)
    d4 = register_bundle(
        other_split,
        w4,
        _run_id(),
        {**tags, "split_definition": "zzz"},
        test_accuracy=0.99,
        name=name,
    )
    assert d4["alias"] == "challenger" and "not comparable" in d4["reason"]

    # The champion loads by alias and answers images like the bundle it was registered from.
    import mlflow.pyfunc
    import pandas as pd

    loaded = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    (answer,) = loaded.predict(pd.DataFrame({"image": [clear_frame.read_bytes()]}))
    expected = Predictor(better).analyse(read_image(clear_frame))
    assert answer["faces"] == expected and expected and answer["reason"] is None

    # A tie promotes the newer model, though the champion's tag is rounded up (0.450382).
    tie, w5 = make_bundle(tmp_path / "e", seed=5)
    d5 = register_bundle(tie, w5, _run_id(), tags, test_accuracy=59 / 131, name=name)
    assert (d5["alias"], d5["version"]) == ("champion", 5), d5["reason"]
    shutil.rmtree(tmp_path)


def test_real_registry_keeps_a_candidate_that_forgets_ferplus_a_challenger(
    registry: str, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    from ferops.registry import FERPLUS_TAG, register_bundle

    name, tags = registry, {"split_definition": "abc", "git_commit": "test"}
    first, w1 = make_bundle(tmp_path / "a", seed=1)
    d1 = register_bundle(first, w1, _run_id(), tags, 0.40, name=name, ferplus_accuracy=0.80)
    assert d1["alias"] == "champion"
    client = MlflowClient()
    assert client.get_model_version(name, "1").tags[FERPLUS_TAG] == "0.800000"

    # Better on SFEW, 5 points worse on FER+: stays challenger, and its tag says why.
    forgets, w2 = make_bundle(tmp_path / "b", seed=2)
    d2 = register_bundle(forgets, w2, _run_id(), tags, 0.45, name=name, ferplus_accuracy=0.75)
    assert (d2["alias"], d2["champion"]) == ("challenger", 1)
    assert "forgets FER+" in d2["reason"]
    assert "forgets FER+" in client.get_model_version(name, "2").tags["promotion"]
    assert client.get_model_version_by_alias(name, "champion").version == "1"

    # Within the allowed drop (1 point < 2): the SFEW win promotes it.
    keeps, w3 = make_bundle(tmp_path / "c", seed=3)
    d3 = register_bundle(keeps, w3, _run_id(), tags, 0.45, name=name, ferplus_accuracy=0.79)
    assert (d3["alias"], d3["version"]) == ("champion", 3), d3["reason"]

    # No FER+ figure against a champion that has one: not comparable, never promoted by itself.
    unmeasured, w4 = make_bundle(tmp_path / "d", seed=4)
    d4 = register_bundle(unmeasured, w4, _run_id(), tags, 0.99, name=name)
    assert d4["alias"] == "challenger" and "not comparable" in d4["reason"]
    shutil.rmtree(tmp_path)


def test_models_cli_lists_and_rolls_back(registry: str, tmp_path: Path, capsys) -> None:
    from mlflow.tracking import MlflowClient

    from ferops import models_cli as cli
    from ferops.registry import register_bundle

    name, tags = registry, {"split_definition": "s"}
    for seed, accuracy in ((5, 0.3), (6, 0.5)):
        bundle, weights = make_bundle(tmp_path / str(seed), seed)
        register_bundle(bundle, weights, _run_id(), tags, accuracy, name=name)
    assert cli.main(["--name", name, "list"]) == 0
    listing = capsys.readouterr().out
    assert "champion" in listing and "0.500000" in listing and "0.300000" in listing
    assert (
        cli.main(["--name", name, "rollback", "1", "--why", "v2 misbehaves", "--who", "qa"]) == 0
    )
    version = MlflowClient().get_model_version_by_alias(name, "champion")
    assert version.version == "1"
    assert version.tags["promotion"] == "champion: by hand, qa: v2 misbehaves"
    assert cli.main(["--name", name, "rules", "2"]) == 0
    assert "Angry:" in capsys.readouterr().out


def test_models_cli_diffs_the_rules_of_two_versions(registry: str, tmp_path: Path, capsys) -> None:
    """`ferops-models rules A B` on two real bundles registered in a real MLflow server: per
    class the rule text of each version, the conditions added and removed, and the held-out
    fidelity the explain stage logged to each version's run."""
    import json

    from ferops import models_cli as cli
    from ferops.data import CLASSES
    from ferops.registry import register_bundle
    from ferops.rulediff import FIDELITY_PREFIX, diff_rules, voting_rules

    name, tags, rules, fidelity = registry, {"split_definition": "s"}, [], []
    for seed, base in ((12, 0.90), (13, 0.95)):
        bundle, weights = make_bundle(tmp_path / str(seed), seed)
        rules.append(json.loads((bundle / "rules.json").read_text()))
        fidelity.append({c: round(base - 0.01 * i, 4) for i, c in enumerate(CLASSES)})
        metrics = {f"{FIDELITY_PREFIX}{c}": f for c, f in fidelity[-1].items()}
        metrics[f"{FIDELITY_PREFIX}mean"] = sum(fidelity[-1].values()) / len(CLASSES)
        register_bundle(bundle, weights, _run_id(metrics), tags, 0.4, name=name)

    capsys.readouterr()  # MLflow's "View run …" lines
    assert cli.main(["--name", name, "rules", "1", "2"]) == 0
    out = capsys.readouterr().out
    changes = diff_rules(rules[0], rules[1], fidelity[0], fidelity[1])
    assert [c.name for c in changes] == list(CLASSES)
    assert any(c.changed and (c.conditions_added or c.conditions_removed) for c in changes)
    assert out.splitlines()[0].startswith(
        f"rules of {name} v1 → v2: {sum(c.changed for c in changes)} of 7 classes changed"
    )
    assert "mean held-out fidelity 0.8700 → 0.9200" in out
    before, after = voting_rules(rules[0]), voting_rules(rules[1])
    # each class's own lines: from "<Class>: " to the next class's header
    parts = re.split(rf"\n({'|'.join(CLASSES)}): ", out)
    blocks = dict(zip(parts[1::2], parts[2::2], strict=True))
    assert sorted(blocks) == sorted(CLASSES)
    for change in changes:
        block = blocks[change.name]
        assert (
            f"{100 * change.fidelity_before:.1f} % → {100 * change.fidelity_after:.1f} %" in block
        )
        assert "(+5.0 points)" in block
        if change.changed:
            assert f"v1: {before[change.name]['text']}" in block
            assert f"v2: {after[change.name]['text']}" in block
            for condition in change.conditions_added + change.conditions_removed:
                assert condition in block
    # One version alone: its rules, as before.
    assert cli.main(["--name", name, "rules", "2"]) == 0
    single = capsys.readouterr().out
    assert all(f"{c}: {after[c]['text']}" in single for c in CLASSES)


def test_rule_diff_of_hand_made_trees() -> None:
    """A tree compared with itself is unchanged; a moved threshold is one condition added and
    one removed; a class without fidelity says n/a."""
    import numpy as np

    from ferops.explanation import Tree
    from ferops.rulediff import diff_rules, diff_text
    from ferops.rules import class_rules

    def rules(threshold: float) -> dict:
        tree = {
            "children_left": [1, -1, -1],
            "children_right": [2, -1, -1],
            "feature": [4, -2, -2],
            "threshold": [threshold, 0, 0],
            "positive": [0.5, 0.1, 0.9],
            "samples": [10, 5, 5],
        }
        text = class_rules(
            Tree(tree), np.zeros((1, 8)), np.zeros(1, bool)
        ).text  # as explain writes it
        return {"classes": ["A"], "trees": {"A": tree}, "rules": {"A": {"text": text}}}

    (same,) = diff_rules(rules(0.5), rules(0.5), {"A": 0.9}, {"A": 0.9})
    assert not same.changed and same.rules_kept == 1 and same.fidelity_change == 0
    (moved,) = diff_rules(rules(0.5), rules(0.25), {"A": 0.9})
    assert moved.before == "(feature5 > 0.500)" and moved.after == "(feature5 > 0.250)"
    assert moved.conditions_added == ["(feature5 > 0.250)"]
    assert moved.conditions_removed == ["(feature5 > 0.500)"] and moved.rules_kept == 0
    text = diff_text([moved], "v1", "v2")
    assert (
        "A: changed; held-out fidelity 90.0 % → n/a" in text and "v2: (feature5 > 0.250)" in text
    )


def test_gate_fails_closed_when_the_champion_cannot_be_read(
    registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from ferops.processes import free_port
    from ferops.registry import champion_version, register_bundle

    name, tags = registry, {"split_definition": "s"}
    client = MlflowClient()
    # "Does not exist" is the only "no champion": no registered model, or one without the alias.
    assert champion_version(client, name) is None
    client.create_registered_model(name)
    assert champion_version(client, name) is None
    first, w1 = make_bundle(tmp_path / "a", seed=7)
    assert register_bundle(first, w1, _run_id(), tags, 0.30, name=name)["alias"] == "champion"

    # A champion whose test accuracy cannot be read is not beaten by any number.
    client.set_model_version_tag(name, "1", "test_accuracy", "n/a")
    better, w2 = make_bundle(tmp_path / "b", seed=8)
    d2 = register_bundle(better, w2, _run_id(), tags, 0.99, name=name)
    assert (d2["alias"], d2["champion"]) == ("challenger", 1), d2["reason"]
    assert "not a number" in client.get_model_version(name, "2").tags["promotion"]
    assert client.get_model_version_by_alias(name, "champion").version == "1"

    # A registry that does not answer is an error, never "no champion": nothing is registered.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(MlflowException):
        champion_version(MlflowClient(tracking_uri=dead, registry_uri=dead), name)
    third, w3 = make_bundle(tmp_path / "c", seed=9)
    live = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(dead)
    try:
        with pytest.raises(MlflowException):
            register_bundle(third, w3, "no-run", tags, 0.99, name=name)
    finally:
        mlflow.set_tracking_uri(live)
    assert len(client.search_model_versions(f"name='{name}'")) == 2
    assert client.get_model_version_by_alias(name, "champion").version == "1"


def test_mlflow_models_predict_answers_images_like_predict(
    registry: str, tmp_path: Path, clear_frame: Path, bad_files: dict[str, Path]
) -> None:
    import base64
    import json
    import os
    import subprocess
    import sys

    import mlflow
    from mlflow.tracking import MlflowClient

    from ferops.registry import card_summary, register_bundle

    name, card = registry, ROOT / "MODEL_CARD.md"
    bundle, weights = make_bundle(tmp_path / "a", seed=21)
    tags = {"split_definition": "s", "git_commit": "abc123"}
    assert (
        register_bundle(bundle, weights, _run_id(), tags, 0.4, name=name, card=card)["alias"]
        == "champion"
    )

    # MLflow's JSON input: binary columns as base64 text; `crop` optional per row.
    rows = [[clear_frame, False], [clear_frame, True], [bad_files["corrupt"], False]]
    data = [[base64.b64encode(path.read_bytes()).decode(), crop] for path, crop in rows]
    request = tmp_path / "request.json"
    request.write_text(
        json.dumps({"dataframe_split": {"columns": ["image", "crop"], "data": data}})
    )
    answer = tmp_path / "answer.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "models",
            "predict",
            "-m",
            f"models:/{name}@champion",
            "-i",
            str(request),
            "-t",
            "json",
            "-o",
            str(answer),
            "--env-manager",
            "local",
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    payload = json.loads(answer.read_text())
    whole, crop, corrupt = payload["predictions"] if isinstance(payload, dict) else payload

    predictor = Predictor(bundle)
    rgb = read_image(clear_frame)
    assert whole["faces"] == predictor.analyse(rgb) and whole["faces"]
    assert crop["faces"] == predictor.analyse(rgb, is_crop=True)
    assert (corrupt["faces"], corrupt["error"]) == ([], "corrupt")

    # The signature, the card among the version's artifacts, the descriptions from the card.
    info = mlflow.models.get_model_info(f"models:/{name}@champion")
    assert info.signature.inputs.input_names() == ["image", "crop"]
    local = Path(
        mlflow.artifacts.download_artifacts(f"models:/{name}/1", dst_path=str(tmp_path / "dl"))
    )
    (logged,) = local.rglob("MODEL_CARD.md")
    assert logged.read_text() == card.read_text()
    client = MlflowClient()
    summary = card_summary(card.read_text())
    assert "Art. 5(1)(f)" in summary and not summary.startswith("#")
    assert client.get_registered_model(name).description == summary
    description = client.get_model_version(name, "1").description
    assert description.startswith(summary) and "- test accuracy: 0.4000" in description
    assert "- git commit: abc123" in description and len(description) <= 5000


def test_ferops_experiment_is_marked_model_training(
    mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    from ferops.tracking import EXPERIMENT, start_run

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    for attempt in range(2):  # a second run keeps the mark
        start_run(tmp_path / "run.json", f"kind-{attempt}", {"stage": "test"})
        experiment = MlflowClient(tracking_uri=mlflow_server).get_experiment_by_name(EXPERIMENT)
        assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_the_champion_is_resolved_and_downloaded_in_one_place(
    mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ferops analyse` without --bundle and `import-bento` resolve the champion with
    ferops.packaging.registered_version: the bundle they download is the registered one."""
    from ferops.analyse import champion_bundle
    from ferops.digests import file_digest
    from ferops.packaging import registered_version
    from tests.bundles import register_tiny

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    name = "ferops-test-resolve"
    bundle, _, decision = register_tiny(mlflow_server, tmp_path / "m", 41, name, "resolve-tests")
    found = registered_version("champion", None, name)
    assert int(found.version) == decision["version"]
    assert registered_version(None, decision["version"], name).run_id == found.run_id
    with pytest.raises(ValueError, match="exactly one"):
        registered_version("champion", 1, name)
    downloaded = champion_bundle(tmp_path / "dl", name=name)
    manifest = "manifest.json"
    assert file_digest(downloaded / manifest) == file_digest(bundle / manifest)
