"""Registry against a real `mlflow server`: idempotent registration, the promotion gate, and
loading `models:/…@champion` gives the bundle's outputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ferops.inference import Predictor
from tests.bundles import make_bundle


@pytest.fixture()
def registry(mlflow_server: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("registry-tests")
    return f"ferops-test-{request.node.name[-20:]}"


def _run_id() -> str:
    import mlflow

    with mlflow.start_run() as run:
        return run.info.run_id


def test_register_twice_is_one_version_and_gate_decides(registry: str, tmp_path: Path) -> None:
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
    d4 = register_bundle(other_split, w4, _run_id(), {**tags, "split_definition": "zzz"},
                         test_accuracy=0.99, name=name)  # fmt: skip
    assert d4["alias"] == "challenger" and "not comparable" in d4["reason"]

    # The champion loads by alias and answers like the bundle it was registered from.
    import mlflow.pyfunc

    loaded = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    crops = np.random.default_rng(0).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    expected, _ = Predictor(better).classify(list(crops))
    np.testing.assert_allclose(np.asarray(loaded.predict(crops)), expected, atol=1e-5)

    # A tie promotes the newer model, though the champion's tag is rounded up (0.450382).
    tie, w5 = make_bundle(tmp_path / "e", seed=5)
    d5 = register_bundle(tie, w5, _run_id(), tags, test_accuracy=59 / 131, name=name)
    assert (d5["alias"], d5["version"]) == ("champion", 5), d5["reason"]
    shutil.rmtree(tmp_path)


def test_models_cli_lists_and_rolls_back(registry: str, tmp_path: Path, capsys) -> None:
    from mlflow.tracking import MlflowClient

    from ferops import cli
    from ferops.registry import register_bundle

    name, tags = registry, {"split_definition": "s"}
    for seed, accuracy in ((5, 0.3), (6, 0.5)):
        bundle, weights = make_bundle(tmp_path / str(seed), seed)
        register_bundle(bundle, weights, _run_id(), tags, accuracy, name=name)
    assert cli.main(["--name", name, "list"]) == 0
    listing = capsys.readouterr().out
    assert "champion" in listing and "0.500000" in listing and "0.300000" in listing
    assert cli.main(["--name", name, "rollback", "1", "--why", "v2 misbehaves", "--who", "qa"]) == 0
    version = MlflowClient().get_model_version_by_alias(name, "champion")
    assert version.version == "1"
    assert version.tags["promotion"] == "champion: by hand, qa: v2 misbehaves"
    assert cli.main(["--name", name, "rules", "2"]) == 0
    assert "Angry:" in capsys.readouterr().out


def test_gate_fails_closed_when_the_champion_cannot_be_read(registry: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
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
