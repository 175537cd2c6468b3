"""Checks on a run's folders and checkpoint before anything is written or trained.

* A checkpoint given with ``--ckpt_path`` must exist and be a complete checkpoint file, and the
  run it continues must be the same distillation: settings that define what is being learned
  (:data:`FIXED`) must agree with the checkpoint's; everything else (iterations, export folder,
  logging and evaluation cadence, learning rates...) takes the value given now.
* A fresh run does not silently start over in a folder that holds a finished or interrupted run
  (``--overwrite true`` says to replace it).
* The folders a run writes to are writable (checked at set-up, not at the first export).
* A run refused once the Trainer has started (checks that need the data, e.g. experts that do not
  fit it) leaves nothing behind: the folders it created (logs, config copy) are removed.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lit_distill.errors import LitDistillError

#: Hyper-parameters that define what a distillation learns: a resume must keep them.
FIXED = (
    "_class_path", "dataset", "num_classes", "image_shape", "ipc", "factor", "arch",
    "arch_kwargs", "image_space",
)  # fmt: skip


class RunStateError(LitDistillError, ValueError):
    """A checkpoint or a run folder does not allow what the command asks."""


def check_checkpoint_file(path: str | Path) -> Path:
    """The checkpoint at ``path``, if it exists and is a complete file (read without unpickling)."""
    path = Path(path)
    if not path.is_file():
        folder = path.parent if path.parent.is_dir() else None
        found = sorted(p.name for p in folder.glob("*.ckpt")) if folder else []
        hint = f" ({folder} holds: {', '.join(found)})" if found else ""
        raise RunStateError(
            f"--ckpt_path {path}: no such checkpoint{hint}. Give the last.ckpt of the run to "
            "resume (in its checkpoints folder), or leave --ckpt_path out to start a new run"
        )
    if not zipfile.is_zipfile(path):
        raise RunStateError(
            f"--ckpt_path {path} is not a complete checkpoint (truncated, or not one): resume "
            "from an earlier checkpoint of the run, or start over without --ckpt_path"
        )
    return path


def _load(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # a damaged archive, or objects a weights-only load refuses
        raise RunStateError(
            f"--ckpt_path {path} cannot be read ({type(err).__name__}: {err})"
        ) from err


@dataclass(frozen=True)
class _Facts:
    hparams: dict[str, Any]
    iteration: int | None
    version: Any


#: The facts of the last checkpoint read, keyed by (resolved path, size, mtime): a resume asks
#: for them several times (settings before and after the data is built, progress, TensorBoard
#: version), and the file is read once.
_facts_cache: dict[tuple[str, int, int], _Facts] = {}


def _facts(path: Path) -> _Facts:
    try:
        stat = Path(path).stat()
    except OSError:
        return _read_facts(path)  # _load names the problem
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _facts_cache:
        _facts_cache.clear()
        _facts_cache[key] = _read_facts(path)
    return _facts_cache[key]


def _read_facts(path: Path) -> _Facts:
    checkpoint = _load(path)
    iteration = checkpoint.get("state_dict", {}).get("iteration")
    return _Facts(
        hparams=dict(checkpoint.get("hyper_parameters", {})),
        iteration=None if iteration is None else int(iteration),
        version=checkpoint.get(LOGGER_VERSION),
    )


def checkpoint_hparams(path: Path) -> dict[str, Any]:
    """The hyper-parameters stored in a checkpoint (memory-mapped, no code executed)."""
    return dict(_facts(path).hparams)


#: Where a distillation checkpoint keeps the TensorBoard version of its run.
LOGGER_VERSION = "lit_distill_logger_version"


def checkpoint_progress(path: Path) -> tuple[int | None, Any]:
    """(iteration, TensorBoard version) a distillation checkpoint was saved at (None: unknown)."""
    facts = _facts(path)
    return facts.iteration, facts.version


def check_resume(hparams: dict[str, Any], stored: dict[str, Any], path: Path) -> None:
    """Refuse a resume whose fixed settings contradict the checkpoint's (both values named)."""
    differing = [
        key for key in FIXED
        if key in stored and key in hparams and _plain(stored[key]) != _plain(hparams[key])
    ]  # fmt: skip
    if differing:
        details = "; ".join(
            f"{key}: checkpoint {_plain(stored[key])!r}, now {_plain(hparams[key])!r}"
            for key in differing
        )
        raise RunStateError(
            f"--ckpt_path {path} continues another distillation ({details}). These settings "
            "cannot change on resume: use the checkpoint's values, or start a new run in "
            "another folder"
        )


def finished_or_interrupted(export_dir: Path, checkpoint_dirs: Iterable[Path]) -> str | None:
    """What a folder already holds that a fresh run would overwrite (None: nothing)."""
    final = export_dir / "synthetic_final.pt"
    if final.exists():
        return f"a finished run ({final})"
    for folder in checkpoint_dirs:
        last = folder / "last.ckpt"
        if last.exists():
            return f"an interrupted run ({last})"
    return None


def _lineage(folder: str | Path) -> tuple[Path, ...]:
    """``folder`` and its parents, innermost first."""
    return (Path(folder), *Path(folder).parents)


def check_writable(folders: Iterable[Path]) -> None:
    """Every folder can be created and written to (nothing is left behind)."""
    for folder in folders:
        existing = next((p for p in _lineage(folder) if p.exists()), None)
        if existing is not None and not (
            existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)
        ):
            raise RunStateError(
                f"{folder} cannot be written ({existing} is not a writable folder): choose another "
                "folder (--trainer.default_root_dir, --model.init_args.export_dir, or the "
                "checkpoint callback's dirpath)"
            )


def new_folders(folders: Iterable[str | Path]) -> list[Path]:
    """The outermost missing folder on the way to each of ``folders`` (those a run would create)."""
    fresh = []
    for folder in folders:
        missing = [p for p in _lineage(folder) if not p.exists()]
        if missing and missing[-1] not in fresh:
            fresh.append(missing[-1])
    return fresh


@contextmanager
def removed_if_refused(
    folders: Iterable[str | Path], started: Callable[[], bool]
) -> Iterator[None]:
    """Remove the folders the block creates under ``folders`` when it raises a lit-distill error
    before ``started()`` (a refused run writes nothing); a run that has started keeps its files
    (its last good checkpoint and export)."""
    fresh = new_folders(folders)
    try:
        yield
    except LitDistillError:
        if not started():
            for folder in fresh:
                shutil.rmtree(folder, ignore_errors=True)
        raise


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
