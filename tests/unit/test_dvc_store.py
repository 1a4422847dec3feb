"""The stored remote (``dvc-store/``, kept in git) holds exactly the outputs ``dvc.lock`` names
for the stages that store them: nothing missing (a fresh clone's ``make repro`` pulls them),
nothing superseded (the repository stays small to clone: ``make store`` prunes), and every blob's
content hashes to its name."""

from __future__ import annotations

import configparser
import hashlib
import json
from pathlib import Path

import yaml

from tests.paths import ROOT


def _store() -> Path:
    """The folder of the remote named ``stored`` in ``.dvc/config`` (relative to ``.dvc/``)."""
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc" / "config")
    (section,) = [name for name in config.sections() if 'remote "stored"' in name]
    return (ROOT / ".dvc" / config[section]["url"]).resolve() / "files" / "md5"


def _blob(store: Path, md5: str) -> Path:
    return store / md5[:2] / md5[2:]


def _stored_outs() -> dict[str, str]:
    """``path → md5`` of every output that ``dvc.yaml`` sends to the ``stored`` remote."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    stored = {
        path
        for stage in stages.values()
        for key in ("outs", "metrics", "plots")
        for out in stage.get(key, [])
        if isinstance(out, dict)
        for path, options in out.items()
        if (options or {}).get("remote") == "stored"
    }
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]
    md5s = {
        out["path"]: out["md5"]
        for stage in lock.values()
        for out in stage.get("outs", [])
        if out["path"] in stored
    }
    assert set(md5s) == stored, f"stored outputs without a dvc.lock entry: {stored - set(md5s)}"
    return md5s


def test_the_store_holds_exactly_what_dvc_lock_names() -> None:
    store = _store()
    named: set[str] = set()
    missing = []
    for path, md5 in _stored_outs().items():
        named.add(md5)
        if not _blob(store, md5).is_file():
            missing.append(path)
            continue
        if md5.endswith(".dir"):
            for entry in json.loads(_blob(store, md5).read_text()):
                named.add(entry["md5"])
                if not _blob(store, entry["md5"]).is_file():
                    missing.append(f"{path}/{entry['relpath']}")
    held = {f"{p.parent.name}{p.name}" for p in store.glob("*/*") if p.is_file()}
    assert not missing, f"named by dvc.lock but not in the store: {missing[:10]}"
    superseded = held - named
    assert not superseded, (
        f"{len(superseded)} blobs no dvc.lock output names (run `make store` to prune): "
        f"{sorted(superseded)[:5]}"
    )


def test_every_stored_blob_hashes_to_its_name() -> None:
    wrong = []
    for blob in _store().glob("*/*"):
        name = f"{blob.parent.name}{blob.name}"
        digest = hashlib.md5(blob.read_bytes()).hexdigest()
        if name.removesuffix(".dir") != digest:
            wrong.append(name)
    assert not wrong, f"blobs whose content does not hash to their name: {wrong[:10]}"
