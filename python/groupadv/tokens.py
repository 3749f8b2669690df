"""Token-level layouts, as verl and OpenRLHF pass rollouts: per-sequence scores summed from
token rewards, group-relative advantages of the scores, broadcast back over the tokens.

Two layouts:

* padded: ``token_level_rewards`` (bs, L) and ``response_mask`` (bs, L);
* packed: flat token rewards with one length per sequence (and an optional flat mask).

The score of a sequence is the sum of all its token rewards, masked or not, exactly as verl's
``token_level_rewards.sum(dim=-1)`` (reward managers write the reward at the last valid token,
so padding is 0). Sums accumulate in float64. The groups are over sequences (``group_size``,
``offsets`` or ``group_ids`` of length bs), and every keyword of :func:`groupadv.advantages`
applies to the scores. In the compiled backend both token passes (sums, broadcast) run in
parallel in Rust and the output can be given as ``out=``. torch tensors in give tensors out;
CUDA tensors are computed with torch on the device.
"""

from __future__ import annotations

import numpy as np

from . import _backend, _torch
from ._api import advantages
from ._inputs import aligned, check_out, out_array, rewards_array, threads_value


def _mask_array(mask, shape, dtype) -> np.ndarray:
    """The mask as the core reads it: bool and integer masks as unsigned flags of their own
    width (the compiled core reads int64 as verl passes it, no conversion pass; the numpy
    twin gets uint8 flags), float masks as values of the rewards' dtype. A nonzero integer
    selects its token."""
    m = np.asarray(mask)
    if m.shape != shape:
        raise ValueError(f"response_mask has shape {m.shape}, expected {shape}")
    if m.dtype == np.bool_:
        return aligned(m).view(np.uint8)
    if m.dtype.kind in "iu":
        if m.dtype.itemsize == 1:
            return aligned(m).view(np.uint8)
        if _backend.name == "native" and m.dtype.itemsize in (2, 4, 8):
            return aligned(m).view(f"u{m.dtype.itemsize}")
        return aligned(m != 0).view(np.uint8)
    if m.dtype.kind == "f":
        return aligned(m, dtype)
    raise TypeError(f"response_mask must be bool, integer or float, got dtype {m.dtype}")


def _token_array(tokens, ndim: int) -> np.ndarray:
    arr = np.asarray(tokens)
    if arr.ndim != ndim:
        raise ValueError(f"token rewards must be {ndim}-D, got shape {arr.shape}")
    flat = rewards_array(arr.reshape(-1), "token rewards")
    return flat.reshape(arr.shape)


def token_advantages(token_level_rewards, response_mask, group_size=None, *, offsets=None,
                     group_ids=None, groups=None, out=None, num_threads=None, **kwargs):
    """Advantages (bs, L) from token rewards (bs, L) and a response mask (bs, L):
    ``out[i, t] = A(score_i) * mask[i, t]`` with ``score_i = sum_t token_level_rewards[i, t]``.

    Groups are over the bs sequences. ``kwargs`` as :func:`groupadv.advantages` (center, scale,
    ddof, eps, singleton, nan, preset, ...). A float mask multiplies; a bool/int mask selects.
    """
    check_out(out, token_level_rewards=token_level_rewards, response_mask=response_mask,
              offsets=offsets, group_ids=group_ids)
    if _torch.is_tensor(token_level_rewards) and _torch.on_device(token_level_rewards):
        return _torch_tokens(token_level_rewards, response_mask, group_size, offsets, group_ids, groups, out, kwargs)
    like = token_level_rewards if _torch.is_tensor(token_level_rewards) else None
    as_np = _torch.numpy_if_tensor
    tokens = _token_array(as_np(token_level_rewards), 2)
    mask = _mask_array(as_np(response_mask), tokens.shape, tokens.dtype)
    threads = threads_value(num_threads)
    scores = _backend.impl.token_scores(tokens, None, threads)
    adv = advantages(scores, group_size, offsets=as_np(offsets), group_ids=as_np(group_ids), groups=groups,
                     num_threads=num_threads, **kwargs)
    return _finish(adv, mask, None, tokens, out, like, threads, _half(token_level_rewards, out))


def packed_token_advantages(token_rewards, lengths, group_size=None, *, offsets=None, group_ids=None,
                            groups=None, response_mask=None, out=None, num_threads=None, **kwargs):
    """Advantages for packed sequences: flat ``token_rewards`` whose sequence i has
    ``lengths[i]`` tokens. Each sequence's score is the sum of its tokens; its advantage fills
    its tokens (times the flat ``response_mask`` when given). Groups are over the sequences."""
    check_out(out, token_rewards=token_rewards, lengths=lengths, offsets=offsets, group_ids=group_ids,
              response_mask=response_mask)
    as_np = _torch.numpy_if_tensor
    like = token_rewards if _torch.is_tensor(token_rewards) else None
    tokens = _token_array(as_np(token_rewards), 1)
    lens = np.asarray(as_np(lengths))
    if lens.ndim != 1 or lens.dtype.kind not in "iu":
        raise TypeError("lengths must be a 1-D array of integers")
    if lens.size == 0:
        raise ValueError("lengths is empty")
    if np.any(lens < 0):
        raise ValueError("lengths must be >= 0")
    if int(lens.sum()) != len(tokens):
        raise ValueError(f"lengths add up to {int(lens.sum())} but there are {len(tokens)} token rewards")
    seq_offsets = np.concatenate(([0], np.cumsum(lens))).astype(np.int64)
    threads = threads_value(num_threads)
    scores = _backend.impl.token_scores(tokens, seq_offsets, threads)
    adv = advantages(scores, group_size, offsets=as_np(offsets), group_ids=as_np(group_ids), groups=groups,
                     num_threads=num_threads, **kwargs)
    mask = None if response_mask is None else _mask_array(as_np(response_mask), tokens.shape, tokens.dtype)
    return _finish(adv, mask, seq_offsets, tokens, out, like, threads, _half(token_rewards, out))


def _half(tokens, out):
    """float16 for numpy float16 token rewards without out= (dtype policy: half in, half out)."""
    return np.dtype(np.float16) if out is None and getattr(tokens, "dtype", None) == np.float16 else None


def _finish(adv, mask, seq_offsets, tokens, out, like, threads, half=None):
    """Broadcast the advantages over the tokens; tensors back in the rewards' dtype policy
    (bfloat16 in, bfloat16 out) and into an ``out=`` tensor of any float dtype."""
    from ._api import _narrow, _write

    if like is None:
        result = out_array(out, tokens)
        _backend.impl.broadcast_tokens(adv, mask, seq_offsets, result, threads)
        return result if half is None else _narrow(result, half)
    want = _torch.result_dtype(like.dtype)
    direct = out is not None and out.dtype == want and _torch.shares_numpy(out) and want == like.dtype \
        and tokens.dtype == _torch.to_numpy(out).dtype
    result = out_array(_torch.to_numpy(out) if direct else None, tokens)
    _backend.impl.broadcast_tokens(adv, mask, seq_offsets, result, threads)
    if direct:
        return out
    return _write(out, _torch.from_numpy(result, like, want))


def _torch_tokens(tokens, mask, group_size, offsets, group_ids, groups, out, kwargs):
    """Padded token layout on a non-CPU device: scores, advantages and broadcast in torch."""
    import torch

    if tokens.ndim != 2:
        raise ValueError(f"token rewards must be 2-D, got shape {tuple(tokens.shape)}")
    if tuple(mask.shape) != tuple(tokens.shape):
        raise ValueError(f"response_mask has shape {tuple(mask.shape)}, expected {tuple(tokens.shape)}")
    # Scores summed in float64 and kept in float32 or wider (a bfloat16 score would round
    # distinct sums together), as the CPU path.
    wide = torch.float32 if tokens.dtype in (torch.float16, torch.bfloat16) else _torch.result_dtype(tokens.dtype)
    scores = tokens.detach().double().sum(dim=-1).to(wide)
    adv = advantages(scores, group_size, offsets=offsets, group_ids=group_ids, groups=groups, **kwargs)
    m = mask if mask.dtype.is_floating_point else (mask != 0)
    res = (adv.unsqueeze(-1) * m.to(adv.dtype)).to(_torch.result_dtype(tokens.dtype))
    if out is not None:
        out.copy_(res)
        return out
    return res.contiguous()


def _whitened_advantages_native(token_level_rewards, response_mask, group_ids, **kwargs):
    """``masked_whiten(A(score) tiled over the mask) * mask`` (verl's
    ``reinforce_plus_plus_baseline``) from the scores, without the tiled intermediate: the
    masked tokens' mean and variance are those of the bs advantages weighted by their rows'
    mask counts (the core's weighted masked whitening on bs values, so every rule is the
    same), then one broadcast of the whitened advantages. Three token passes: the score sums,
    the mask counts (which also copy a wide integer mask into uint8 flags for the last pass),
    the broadcast. A CPU tensor in the rewards' dtype, or None where the compiled core does
    not take these inputs as they are (numpy backend, device tensors, a float mask, half
    dtypes): the caller composes :func:`token_advantages` and :func:`groupadv.masked_whiten`."""
    import torch

    t, mask = token_level_rewards, response_mask
    if _backend.name != "native" or not _torch.is_tensor(t) or _torch.on_device(t) or not _torch.is_tensor(mask):
        return None
    if t.ndim != 2 or t.shape[0] == 0 or t.dtype not in (torch.float32, torch.float64):
        return None
    if tuple(mask.shape) != tuple(t.shape) or mask.is_floating_point() or mask.is_complex():
        return None
    as_np = _torch.numpy_if_tensor
    tokens = _token_array(as_np(t), 2)
    m = _mask_array(as_np(mask), tokens.shape, tokens.dtype)
    threads = threads_value(None)
    scores = _backend.impl.token_scores(tokens, None, threads)
    adv = advantages(scores, group_ids=as_np(group_ids), **kwargs)
    flags = None if m.dtype == np.uint8 else np.empty(tokens.shape, np.uint8)
    counts = _backend.impl.token_row_weights(m, tokens.shape[0], flags, threads)
    a = np.asarray(adv, dtype=np.float64)
    mean, k = _backend.impl.masked_whiten(a, counts, np.empty_like(a), True, True, True, 1e-8, False, False, False,
                                          threads)
    whitened = ((a - mean) * k + 0.0).astype(tokens.dtype)  # as the core's write: (x - mean) * k + 0
    out = np.empty_like(tokens)
    _backend.impl.broadcast_tokens(whitened, m if flags is None else flags, None, out, threads)
    return torch.from_numpy(out)
