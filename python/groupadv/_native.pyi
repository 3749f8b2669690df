"""Stubs of the compiled module ``groupadv._native`` (src/lib.rs). The pure-numpy module
``groupadv._numpy`` implements the same functions with the same signatures."""

from collections.abc import Iterable
from typing import Literal, overload

import numpy as np
import numpy.typing as npt

__version__: str
MAX_THREADS: int

class Grouping:
    """A resolved group layout."""

    @property
    def n(self) -> int: ...
    @property
    def n_groups(self) -> int: ...
    @property
    def kind(self) -> str: ...
    def sizes(self) -> npt.NDArray[np.int64]: ...
    def codes(self) -> npt.NDArray[np.int64]: ...
    def __reduce__(self) -> tuple[object, tuple[str, int, object]]: ...

def grouping_uniform(n: int, group_size: int) -> Grouping: ...
def grouping_offsets(n: int, offsets: npt.NDArray[np.int64]) -> Grouping: ...
@overload
def grouping_ids_int(
    ids: npt.NDArray[np.int64], with_labels: Literal[False] = False
) -> tuple[Grouping, npt.NDArray[np.int64]]: ...
@overload
def grouping_ids_int(
    ids: npt.NDArray[np.int64], with_labels: Literal[True]
) -> tuple[Grouping, npt.NDArray[np.int64], npt.NDArray[np.int64]]: ...
def grouping_ids_bytes(rows: npt.NDArray[np.uint8]) -> tuple[Grouping, npt.NDArray[np.int64]]: ...
def grouping_ids_str(ids: Iterable[str]) -> tuple[Grouping, npt.NDArray[np.int64]]: ...
def advantages(
    rewards: npt.NDArray[np.floating],
    out: npt.NDArray[np.floating],
    grouping: Grouping,
    center: str,
    scale: str,
    ddof: int,
    eps: float,
    singleton: str,
    nan: str,
    num_threads: int,
    batch_std: float | None = None,
    moments: MomentArrays | None = None,
) -> None:
    """batch_std: with scale "batch"/"batch_residual", the denominator is batch_std + eps.
    moments: (count, mean, m2, scale) per group, used instead of the moments of rewards."""

def advantages_offsets(
    rewards: npt.NDArray[np.floating],
    out: npt.NDArray[np.floating],
    offsets: npt.NDArray[np.int64],
    center: str,
    scale: str,
    ddof: int,
    eps: float,
    singleton: str,
    nan: str,
    num_threads: int,
    batch_std: float | None = None,
) -> None:
    """``advantages`` over the ragged groups of ``offsets`` (contiguous int64), checked as
    ``grouping_offsets`` checks them (the same errors) and read in place, without a copy."""

def group_stats(
    rewards: npt.NDArray[np.floating], grouping: Grouping, ddof: int, nan: str, num_threads: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]: ...
def batch_moments(
    rewards: npt.NDArray[np.floating], grouping: Grouping, nan: str, num_threads: int
) -> tuple[int, float, float, int, float]: ...

# The moments stage: one float64 record per group. M2 (the sum of squared deviations) is
# m2 * scale**2; scale is a power of two, 1 unless M2 would leave the float64 range.
MomentArrays = tuple[
    npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]
]

def group_moments(
    rewards: npt.NDArray[np.floating],
    grouping: Grouping,
    nan: str,
    weights: npt.NDArray[np.float64] | None,
    num_threads: int,
) -> MomentArrays:
    """(count, mean, m2, scale) per group; weights: frequency weights (finite, >= 0)."""

def merge_moments(a: MomentArrays, b: MomentArrays) -> MomentArrays:
    """Elementwise Chan merge (a[g] with b[g]) of records of equal length."""

def moments_std(m: MomentArrays, ddof: int) -> npt.NDArray[np.float64]:
    """scale * sqrt(m2 / (count - ddof)) per record; NaN where count <= ddof."""

def _kernel_self_check(isa: str) -> bool:
    """Test hook: the compiled copy isa ("avx2", "avx512f") of the write pass against the
    generic one (ValueError on a difference); False when this CPU cannot run it."""

def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def _after_fork_in_child() -> None: ...
def _grouping_restore(kind: str, n: int, data: object) -> Grouping: ...
def _pool_cache() -> tuple[int, int]: ...
def _panic_for_test() -> None: ...
# bool/int8 masks as uint8, wider integer masks as the unsigned integers of their width (int64
# from verl read as uint64, no conversion pass; any nonzero selects), float masks as weights
_Mask = npt.NDArray[np.uint8] | npt.NDArray[np.uint16] | npt.NDArray[np.uint32] | npt.NDArray[np.uint64] \
    | npt.NDArray[np.floating]

def token_scores(
    tokens: npt.NDArray[np.floating], offsets: npt.NDArray[np.int64] | None, num_threads: int
) -> npt.NDArray[np.floating]: ...
def broadcast_tokens(
    adv: npt.NDArray[np.floating],
    mask: _Mask | None,
    offsets: npt.NDArray[np.int64] | None,
    out: npt.NDArray[np.floating],
    num_threads: int,
) -> None: ...

# ---- tokens (issue 12): masked whitening ----
def masked_whiten(
    values: npt.NDArray[np.floating],
    mask: _Mask | None,
    out: npt.NDArray[np.floating],
    shift_mean: bool,
    scale: bool,
    unbiased: bool,
    eps: float,
    clamp: bool,
    apply_mask: bool,
    propagate: bool,
    num_threads: int,
) -> tuple[float, float]:
    """out = (values - mean) * k (+ mean unless shift_mean, * mask if apply_mask) with float64
    statistics over the masked tokens; returns (mean, k)."""

# ---- tokens (issue 12): reverse scans ----
def token_scan(
    rewards: npt.NDArray[np.floating],
    values: npt.NDArray[np.floating] | None,
    mask: _Mask | None,
    offsets: npt.NDArray[np.int64] | None,
    out: npt.NDArray[np.floating],
    returns_out: npt.NDArray[np.floating] | None,
    gamma: float,
    lam: float,
    unmasked_zero: bool,
    check: bool,
    num_threads: int,
) -> None:
    """Discounted returns (values None) or GAE (values and returns_out) of each response: rows
    of a 2-D array or segments by offsets; f64 inside, written in the rewards' dtype."""
def token_scan_fused(
    mode: str,
    rewards: npt.NDArray[np.floating],
    values: npt.NDArray[np.floating] | None,
    baselines: npt.NDArray[np.floating] | None,
    mask: _Mask | None,
    out: npt.NDArray[np.floating],
    out2: npt.NDArray[np.floating],
    gamma: float,
    lam: float,
    unmasked_zero: bool,
    num_threads: int,
) -> None:
    """verl's token estimators in one scan over (bs, L) rows, inputs checked: "gae_whiten"
    (GAE into out, whitened over the mask in place; returns into out2), "returns_whiten"
    (returns into out, whiten(out) * mask into out2), "returns_minus" (returns into out,
    out - baselines[row] * mask into out2)."""
def token_row_weights(
    mask: _Mask, rows: int, flags_out: npt.NDArray[np.uint8] | None, num_threads: int
) -> npt.NDArray[np.float64]:
    """Each row's mask weight; a uint8 copy of wider integer flags into flags_out in the same pass."""
def token_row_spans(
    mask: _Mask, rows: int, num_threads: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Each row's number of set flags (bool/integer mask) and its span, flat (start, end) pairs:
    the one run of set flags, (-1, -1) where they are scattered; one pass over the mask."""
def broadcast_spans(
    adv: npt.NDArray[np.floating], spans: npt.NDArray[np.int64], mask: _Mask,
    out: npt.NDArray[np.floating], num_threads: int,
) -> None:
    """out[row, t] = adv[row] on the row's set flags, else 0: one-run rows (spans from
    token_row_spans) written by position without reading the mask."""
# ---- issue 12, group-level estimators (engineer "groups"): src/select.rs, src/components.rs ----

def passk_advantages(
    rewards: np.ndarray, out: np.ndarray, grouping: Grouping, scale: str, ddof: int, eps: float,
    singleton: str, nan: str, num_threads: int,
) -> None: ...
def component_sums(
    rewards: np.ndarray, k: int, weights: np.ndarray, out: np.ndarray, nan: str, num_threads: int,
) -> None: ...
def normalize_then_sum(
    rewards: np.ndarray, k: int, weights: np.ndarray, out: np.ndarray, grouping: Grouping, center: str,
    scale: str, ddof: int, eps: float, singleton: str, nan: str, num_threads: int,
) -> None: ...
def optimal_token_baseline(
    rewards: npt.NDArray[np.floating],
    mask: npt.NDArray[np.integer] | npt.NDArray[np.floating],
    old_log_probs: npt.NDArray[np.floating],
    sum_pi_squared: npt.NDArray[np.floating],
    is_weights: npt.NDArray[np.floating] | None,
    codes: npt.NDArray[np.uint32],
    n_groups: int,
    rows: int,
    align: str,
    handle_zero_tail: bool,
    eps: float,
    nan: str,
    adv: npt.NDArray[np.floating],
    returns: npt.NDArray[np.floating],
    num_threads: int,
) -> None:
    """verl's optimal token baseline (src/token_baseline.rs) of flat rows x width inputs (all
    float arrays of the rewards' dtype, float32 or float64; mask uint8/int32/int64/float32/
    float64 holding only 0 and 1) into adv and returns; codes: each row's group in
    0..n_groups; align "position" or "turn"; nan "raise" or "propagate"."""
