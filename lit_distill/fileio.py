"""Safe files: atomic writes and content checksums, shared by trajectories and exports."""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO

import torch
from torch import Tensor


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(file)`` on a temporary file, fsync it, then rename it to ``path``.

    A crash (or an exception in ``write``) never leaves a partial file under ``path``; a file
    already there stays untouched until the rename.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def checksum(*tensors: Tensor | None) -> int:
    """CRC32 of the raw bytes of the given tensors (``None`` and empty ones skipped).

    The bytes are read in place (no copy), so checking a memory-mapped file costs no memory.
    """
    crc = 0
    for t in tensors:
        if t is not None and t.numel():
            crc = zlib.crc32(t.detach().cpu().contiguous().view(torch.uint8).numpy(), crc)
    return crc
