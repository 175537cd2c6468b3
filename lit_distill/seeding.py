"""Random streams derived from (seed, keys...) instead of the global RNG.

Every random draw that shapes a result (which snapshot, which real images, which augmentation)
comes from a generator derived from the run seed and where it happens (rank, iteration, ...).
Resuming from a checkpoint therefore replays exactly the same draws, and each DDP rank gets its
own independent stream without any state outside the checkpoint.
"""

import numpy as np
import torch


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed that depends on ``seed`` and every key, well mixed (NumPy SeedSequence)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *(int(k) for k in keys)])
    return int(state.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed` (small draws; move results)."""
    return torch.Generator().manual_seed(derive_seed(seed, *keys))
