"""Host memory kept for reuse (lit_distill/allocator.py): large blocks stop page-faulting."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lit_distill.allocator import ENV, glibc

# Five training steps of one convolution whose activations (32 MiB each) are above glibc's
# largest mmap threshold, after two warm-up steps; prints whether the setting took effect and
# the page faults of the five steps.
SCRIPT = """
import resource, torch
from lit_distill.allocator import keep_freed_memory
kept = keep_freed_memory()
torch.manual_seed(0)
torch.set_num_threads(1)
conv = torch.nn.Conv2d(16, 16, 3, padding=1)
x = torch.randn(32, 16, 128, 128, requires_grad=True)
def step():
    conv(x).relu().square().mean().backward()
step(); step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(setting: str) -> tuple[str, int]:
    env = {**os.environ, ENV: setting}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True
    )
    kept, faults = done.stdout.split()[-2:]
    return kept, int(faults)


@pytest.mark.skipif(glibc() is None, reason="the setting is glibc's (Linux)")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    kept, kept_faults = _faults("")
    system, system_faults = _faults("system")  # the opt-out: glibc's defaults
    assert (kept, system) == ("True", "False")
    # glibc's defaults map every activation afresh (tens of thousands of 4 KiB pages per step);
    # kept memory serves them from pages already in place.
    assert system_faults > 5 * 2**25 // 4096, system_faults
    assert kept_faults * 10 < system_faults, (kept_faults, system_faults)
