"""``ferops-models``: list registered versions, show a version's rules (or how they changed
between two versions), promote or roll back, and import a version into the BentoML model store
for ``bentoml build``."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path

from ferops import MODEL_NAME
from ferops.registry import CHAMPION, RULES_ARTIFACT
from ferops.tracking import tracking_uri


def _client():
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri())
    return MlflowClient()


def cmd_list(args: argparse.Namespace) -> int:
    client = _client()
    versions = sorted(
        client.search_model_versions(f"name='{args.name}'"), key=lambda v: int(v.version)
    )
    if not versions:
        print(f"no versions of {args.name} at {tracking_uri()}")
        return 1
    aliases: dict[str, list[str]] = {}
    for alias, number in client.get_registered_model(args.name).aliases.items():
        aliases.setdefault(str(number), []).append(alias)
    print(
        f"{'version':>7}  {'aliases':<22} {'test_acc':>8} {'macro_f1':>8}  {'git':<12} promotion"
    )
    for v in versions:
        names = ",".join(aliases.get(str(v.version), [])) or "-"
        accuracy, f1 = v.tags.get("test_accuracy", "?")[:8], v.tags.get("test_macro_f1", "?")[:8]
        commit, promotion = v.tags.get("git_commit", "?")[:12], v.tags.get("promotion", "")
        print(f"{v.version:>7}  {names:<22} {accuracy:>8} {f1:>8}  {commit:<12} {promotion}")
    return 0


def _version_rules(client, name: str, version: int) -> tuple[dict, dict[str, float]]:
    """A registered version's ``rules.json`` and its run's held-out fidelity per class (the
    ``explain`` stage's ``fidelity_test_<class>`` metrics; empty when the run has none)."""
    import mlflow

    from ferops.rulediff import FIDELITY_PREFIX

    found = client.get_model_version(name, str(version))  # fails clearly if it does not exist
    local = mlflow.artifacts.download_artifacts(f"models:/{name}/{found.version}/{RULES_ARTIFACT}")
    metrics = client.get_run(found.run_id).data.metrics if found.run_id else {}
    fidelity = {
        key.removeprefix(FIDELITY_PREFIX): value
        for key, value in metrics.items()
        if key.startswith(FIDELITY_PREFIX)
    }
    return json.loads(Path(local).read_text(encoding="utf-8")), fidelity


def cmd_rules(args: argparse.Namespace) -> int:
    from ferops.rulediff import diff_rules, diff_text, voting_rules

    client = _client()
    rules, fidelity = _version_rules(client, args.name, args.version)
    if args.other is None:
        for name, rule in voting_rules(rules).items():
            print(f"{name}: {rule['text']}")
        return 0
    other, other_fidelity = _version_rules(client, args.name, args.other)
    a, b = f"v{args.version}", f"v{args.other}"
    changes = diff_rules(rules, other, fidelity, other_fidelity)
    mean_a, mean_b = fidelity.get("mean"), other_fidelity.get("mean")
    changed = sum(c.changed for c in changes)
    print(
        f"rules of {args.name} {a} → {b}: {changed} of {len(changes)} classes changed; mean "
        f"held-out fidelity {'n/a' if mean_a is None else f'{mean_a:.4f}'} → "
        f"{'n/a' if mean_b is None else f'{mean_b:.4f}'}"
    )
    print(diff_text(changes, a, b))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    client = _client()
    client.get_model_version(args.name, str(args.version))  # fails clearly if it does not exist
    client.set_registered_model_alias(args.name, args.alias, str(args.version))
    who = args.who or getpass.getuser()
    client.set_model_version_tag(
        args.name, str(args.version), "promotion", f"{args.alias}: by hand, {who}: {args.why}"
    )
    print(f"{args.name} v{args.version} is now {args.alias} ({who}: {args.why})")
    return 0


def cmd_import_bento(args: argparse.Namespace) -> int:
    import logging

    from ferops.packaging import import_from_registry

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    _client()
    alias = None if args.version is not None else args.alias
    tag = import_from_registry(alias=alias, version=args.version, name=args.name)
    print(tag)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ferops-models", description=__doc__)
    parser.add_argument("--name", default=MODEL_NAME)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="versions with metrics and aliases").set_defaults(func=cmd_list)
    rules = sub.add_parser(
        "rules",
        help="a version's extracted rules, or how they changed "
        "from version A to version B (`rules A B`)",
    )
    rules.add_argument("version", type=int)
    rules.add_argument("other", type=int, nargs="?", help="compare with this version")
    rules.set_defaults(func=cmd_rules)
    for verb in ("promote", "rollback"):
        p = sub.add_parser(verb, help=f"{verb} an alias to a version by hand (who/why tagged)")
        p.add_argument("version", type=int)
        p.add_argument("--alias", default=CHAMPION)
        p.add_argument("--why", required=True)
        p.add_argument("--who", default="")
        p.set_defaults(func=cmd_promote)
    bento = sub.add_parser(
        "import-bento",
        help="copy a version (default: the champion) into the "
        "BentoML model store, for `bentoml build` / `bentoml serve`",
    )
    bento.add_argument("--alias", default=CHAMPION)
    bento.add_argument(
        "--version", type=int, default=None, help="a version number instead of an alias"
    )
    bento.set_defaults(func=cmd_import_bento)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
