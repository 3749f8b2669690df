"""Random batches in verl's layout for the live tests against verl (tests/test_verl_live*.py),
and verl's core_algos for them (or a module-level skip)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import torch


def core_algos():
    """verl's ``verl.trainer.ppo.core_algos``; skips the calling test module where verl (an
    optional test dependency, installed by scripts/install_verl.sh) does not import."""
    try:
        from verl.trainer.ppo import core_algos as ca
    except Exception as exc:  # verl and its import-time dependencies are optional
        pytest.skip(f"verl is not importable ({type(exc).__name__}: {exc}); run scripts/install_verl.sh",
                    allow_module_level=True)
    return ca


def batch(rng, dtype, n_groups=12, L=9):
    """Token rewards, mask and shuffled string uids: groups of 1..7 responses (some singletons),
    every third group all-equal (the same score at each response's last valid token)."""
    sizes = rng.integers(1, 8, n_groups)
    sizes[0], sizes[1] = 1, 6  # always a singleton and a spread group
    names = np.array([str(uuid.UUID(int=int(k))) for k in rng.integers(0, 2**62, n_groups)], dtype=object)
    uids = np.repeat(names, sizes)
    equal = np.repeat(np.arange(n_groups) % 3 == 2, sizes) & (np.repeat(sizes, sizes) > 1)
    bs = len(uids)
    lengths = rng.integers(1, L + 1, bs)
    mask = (np.arange(L)[None, :] < lengths[:, None])
    tlr = rng.normal(size=(bs, L)) * mask
    tlr[equal] = 0.0
    tlr[equal, lengths[equal] - 1] = 0.1  # all-equal: eight-ish rewards of 0.1, float32-rounded
    perm = rng.permutation(bs)
    tlr, mask, uids, equal = tlr[perm], mask[perm], uids[perm], equal[perm]
    t = torch.from_numpy(tlr).to(dtype)
    m = torch.from_numpy(mask).to(dtype if rng.random() < 0.5 else torch.int64)
    return t, m, uids, equal
