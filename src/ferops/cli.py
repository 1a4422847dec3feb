"""``ferops-models``: list registered versions, show a version's rules, promote or roll back, and
import a version into the BentoML model store for ``bentoml build``."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path

from ferops.registry import CHAMPION, MODEL_NAME
from ferops.tracking import tracking_uri


def _client():
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri())
    return MlflowClient()


def cmd_list(args: argparse.Namespace) -> int:
    client = _client()
    versions = sorted(client.search_model_versions(f"name='{args.name}'"), key=lambda v: int(v.version))
    if not versions:
        print(f"no versions of {args.name} at {tracking_uri()}")
        return 1
    aliases: dict[str, list[str]] = {}
    for alias, number in client.get_registered_model(args.name).aliases.items():
        aliases.setdefault(str(number), []).append(alias)
    print(f"{'version':>7}  {'aliases':<22} {'test_acc':>8} {'macro_f1':>8}  {'git':<12} promotion")
    for v in versions:
        print(f"{v.version:>7}  {','.join(aliases.get(str(v.version), [])) or '-':<22} {v.tags.get('test_accuracy', '?')[:8]:>8} "
              f"{v.tags.get('test_macro_f1', '?')[:8]:>8}  {v.tags.get('git_commit', '?')[:12]:<12} "
              f"{v.tags.get('promotion', '')}")  # fmt: skip
    return 0


def cmd_rules(args: argparse.Namespace) -> int:
    import mlflow

    client = _client()
    version = client.get_model_version(args.name, str(args.version))
    local = mlflow.artifacts.download_artifacts(f"models:/{args.name}/{version.version}")
    rules = json.loads(next(Path(local).rglob("rules.json")).read_text())
    for name in rules["classes"]:
        text = rules.get("rules", {}).get(name, {}).get("text", "(see trees)")
        print(f"{name}: {text}")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    client = _client()
    client.get_model_version(args.name, str(args.version))  # fails clearly if it does not exist
    client.set_registered_model_alias(args.name, args.alias, str(args.version))
    who = args.who or getpass.getuser()
    client.set_model_version_tag(args.name, str(args.version), "promotion",
                                 f"{args.alias}: by hand, {who}: {args.why}")  # fmt: skip
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
    rules = sub.add_parser("rules", help="a version's extracted rules")
    rules.add_argument("version", type=int)
    rules.set_defaults(func=cmd_rules)
    for verb in ("promote", "rollback"):
        p = sub.add_parser(verb, help=f"{verb} an alias to a version by hand (who/why tagged)")
        p.add_argument("version", type=int)
        p.add_argument("--alias", default=CHAMPION)
        p.add_argument("--why", required=True)
        p.add_argument("--who", default="")
        p.set_defaults(func=cmd_promote)
    bento = sub.add_parser("import-bento", help="copy a version (default: the champion) into the "
                           "BentoML model store, for `bentoml build` / `bentoml serve`")  # fmt: skip
    bento.add_argument("--alias", default=CHAMPION)
    bento.add_argument("--version", type=int, default=None, help="a version number instead of an alias")
    bento.set_defaults(func=cmd_import_bento)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
