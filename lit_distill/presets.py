"""Named presets (expert recipes, evaluation protocols) with field-by-field overrides."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, TypeVar

Preset = TypeVar("Preset")


def pick(presets: dict[str, Preset], name: str, kind: str) -> Preset:
    """``presets[name]``, or a ValueError listing the names a ``kind`` may take."""
    if name not in presets:
        raise ValueError(f"unknown {kind} {name!r}; choose one of {sorted(presets)}")
    return presets[name]


def override(preset: Preset, kind: str, **overrides: Any) -> Preset:
    """``preset`` (a dataclass) with every non-``None`` override applied.

    Raises:
        ValueError: an override names no field of the preset.
    """
    changes = {k: v for k, v in overrides.items() if v is not None}
    valid = {f.name for f in fields(preset)}
    unknown = sorted(set(changes) - valid)
    if unknown:
        raise ValueError(f"unknown {kind} field(s) {unknown}; valid fields are {sorted(valid)}")
    if "milestones" in changes:  # lists from YAML; presets are frozen, hashable tuples
        changes["milestones"] = tuple(changes["milestones"])
    return replace(preset, **changes)
