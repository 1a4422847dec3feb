"""How the per-class rules changed between two model versions (``ferops-models rules A B``).

Reads two ``rules.json`` files as the ``explain`` stage writes them (plain arrays, numpy only:
:mod:`ferops.explanation`) and, per class, compares the rule text, the conditions of the rules
that vote for the class, and the held-out fidelity each version was measured with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ferops.explanation import Tree, rule_text, simplify

#: A run's held-out fidelity per class is the metric ``fidelity_test_<class>`` (and the mean's
#: ``fidelity_test_mean``), as the ``explain`` stage logs it.
FIDELITY_PREFIX = "fidelity_test_"


def voting_rules(rules: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per class of a ``rules.json``: ``text`` (the rule text the ``explain`` stage wrote,
    :func:`ferops.rules.class_rules`), ``rules`` (the rules of the leaves that vote for the
    class, one root-to-leaf path each, simplified) and ``conditions`` (theirs, as text)."""
    out = {}
    for name in rules["classes"]:
        text = rules.get("rules", {}).get(name, {}).get("text")
        if not text:
            raise ValueError(f"rules.json has no rule text for {name}: not written by explain")
        tree = Tree(rules["trees"][name])
        voting = [
            simplify(tree.conditions(nodes))
            for nodes in tree.leaves()
            if tree.leaf_votes(nodes[-1])
        ]
        out[name] = {
            "text": text,
            "rules": [rule_text(c) for c in voting],
            "conditions": {c.text() for conditions in voting for c in conditions},
        }
    return out


@dataclass(frozen=True)
class ClassChange:
    """One class's rules in version A and version B."""

    name: str
    before: str
    after: str
    conditions_added: list[str]
    conditions_removed: list[str]
    rules_kept: int
    fidelity_before: float | None
    fidelity_after: float | None

    @property
    def changed(self) -> bool:
        return self.before != self.after

    @property
    def fidelity_change(self) -> float | None:
        if self.fidelity_before is None or self.fidelity_after is None:
            return None
        return self.fidelity_after - self.fidelity_before


def diff_rules(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    fidelity_before: Mapping[str, float] | None = None,
    fidelity_after: Mapping[str, float] | None = None,
) -> list[ClassChange]:
    """Per class (in ``after``'s order, then classes only ``before`` has), the change of its
    rules from ``before`` to ``after`` (two ``rules.json`` contents) and of its fidelity."""
    a, b = voting_rules(before), voting_rules(after)
    fa, fb = fidelity_before or {}, fidelity_after or {}
    out = []
    for name in list(b) + [n for n in a if n not in b]:
        old = a.get(name, {"text": "(no such class)", "rules": [], "conditions": set()})
        new = b.get(name, {"text": "(no such class)", "rules": [], "conditions": set()})
        out.append(
            ClassChange(
                name=name,
                before=old["text"],
                after=new["text"],
                conditions_added=sorted(new["conditions"] - old["conditions"]),
                conditions_removed=sorted(old["conditions"] - new["conditions"]),
                rules_kept=len(set(old["rules"]) & set(new["rules"])),
                fidelity_before=fa.get(name),
                fidelity_after=fb.get(name),
            )
        )
    return out


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def diff_text(changes: list[ClassChange], label_a: str, label_b: str) -> str:
    """The changes as plain text, one block per class."""
    lines = []
    for c in changes:
        delta = c.fidelity_change
        moved = "" if delta is None else f" ({100 * delta:+.1f} points)"
        lines.append(
            f"{c.name}: {'changed' if c.changed else 'unchanged'}; held-out fidelity "
            f"{_percent(c.fidelity_before)} → {_percent(c.fidelity_after)}{moved}"
        )
        if c.changed:
            lines.append(f"  {label_a}: {c.before}")
            lines.append(f"  {label_b}: {c.after}")
            lines.append(
                f"  conditions added ({len(c.conditions_added)}): "
                f"{', '.join(c.conditions_added) or '-'}"
            )
            lines.append(
                f"  conditions removed ({len(c.conditions_removed)}): "
                f"{', '.join(c.conditions_removed) or '-'}"
            )
            lines.append(f"  voting rules kept as they were: {c.rules_kept}")
        else:
            lines.append(f"  {c.after}")
    return "\n".join(lines)
