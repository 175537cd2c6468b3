"""The configs shipped with the package, found by name (no heavy imports: ``lit-distill configs``
answers in a fraction of a second)."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from lit_distill.errors import ConfigNotFoundError


def shipped_configs() -> dict[str, Path]:
    """The YAML configs installed with the package, by file name."""
    root = importlib.resources.files("lit_distill.configs")
    return {p.name: Path(str(p)) for p in root.iterdir() if p.name.endswith(".yaml")}


def resolve_config(value: str) -> str:
    """An existing file as given; else the shipped config of that name (``.yaml`` optional)."""
    path = Path(value)
    if path.exists():
        return value
    name = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    configs = shipped_configs()
    if name in configs and str(path.parent) in (".", "configs"):
        return str(configs[name])
    raise ConfigNotFoundError(
        f"config {value!r} is neither an existing file nor a shipped config. "
        f"Shipped configs: {', '.join(sorted(configs))} (see `lit-distill configs`)."
    )


def resolve_config_args(args: list[str]) -> list[str]:
    """Replace every ``--config NAME`` / ``-c NAME`` / ``--config=NAME`` by a resolved path."""
    out, i = [], 0
    while i < len(args):
        arg = args[i]
        if arg in ("--config", "-c") and i + 1 < len(args):
            out += [arg, resolve_config(args[i + 1])]
            i += 2
            continue
        if arg.startswith("--config="):
            arg = "--config=" + resolve_config(arg.split("=", 1)[1])
        out.append(arg)
        i += 1
    return out


def describe_configs() -> str:
    """One line per shipped config: its name and the first line of its header comment."""
    lines = []
    for name, path in sorted(shipped_configs().items()):
        first = path.read_text().splitlines()[:1]
        summary = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
        lines.append(f"{name:<28} {summary}")
    return "\n".join(lines)
