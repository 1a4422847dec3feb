"""One way to read a ``params.yaml`` section into its dataclass (no dependencies: serving code
reads the bundle's face settings with it too)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, fields
from typing import Any, Self


class SectionConfig:
    """Mixin for a dataclass made from one section of ``params.yaml`` (or a bundle's manifest).

    :meth:`from_section` refuses keys the dataclass has no field for, naming the valid ones
    (a typo never silently falls back to a default), turns lists into tuples for fields whose
    default is a tuple (YAML has no tuples), and lets a subclass convert nested sections in
    :meth:`convert`.
    """

    @classmethod
    def from_section(cls, section: Mapping[str, Any] | None) -> Self:
        values = dict(section or {})
        valid = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - valid)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} settings {unknown}; valid: {sorted(valid)}")
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name in values and f.default is not MISSING and isinstance(f.default, tuple):
                values[f.name] = tuple(values[f.name])
        return cls(**cls.convert(values))

    @classmethod
    def convert(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Nested sections → their objects (override); plain values pass unchanged."""
        return values
