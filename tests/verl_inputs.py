"""Random batches in verl's layout for the live tests against verl (tests/test_verl_live*.py)."""

from __future__ import annotations

import uuid

import numpy as np
import torch


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
