"""An exact reference for ``groupadv.advantages`` (fractions.Fraction), and the error bound a
float64 computation of it may have.

The semantics are those of the README ("Numerics", "Guarantees") and of the docstring of
``groupadv.advantages``: ``A_i = c * (r_i - mu_g) / d``, statistics of the *exact* input values.
Only the square root is not rational; it is taken to 2^-160 relative precision, far below any
float64 rounding.

The reference says, per case, one of:
  * ``raise``: the contract says ValueError (NaN under nan="raise", a singleton under
    singleton="error", an advantage the output dtype cannot represent);
  * ``ok``: the advantage of each reward (a Fraction, or NaN), a tolerance, and whether it
    must be exactly 0.0;
  and ``may_raise``: the case lies where the README allows a ValueError for an overflowing
  float64 statistic (sums or spreads beyond ~1e307) although an exact answer exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction as F

import numpy as np

U64 = 2.0**-53
TINY64 = 2.0**-1074
F64_MAX = float(np.finfo(np.float64).max)
F32_MAX = float(np.finfo(np.float32).max)
# Where the README lets float64 sums overflow into a ValueError ("beyond ~1e307").
OVERFLOW_ZONE = 1e307


def fsqrt(q: F, bits: int = 160) -> F:
    """sqrt(q) for a Fraction q >= 0, to a relative precision better than 2^-bits."""
    if q == 0:
        return F(0)
    p, r = q.numerator, q.denominator
    n = p * r  # sqrt(p/r) = sqrt(p*r)/r
    k = max(0, bits - n.bit_length() // 2 + 2)
    return F(math.isqrt(n << (2 * k)), r << k)


@dataclass
class Expected:
    raises: bool = False
    why: str = ""
    may_raise: bool = False
    may_raise_why: str = ""
    adv: list = field(default_factory=list)  # Fraction, or None for NaN
    tol: list = field(default_factory=list)  # absolute tolerance (float)
    exact_zero: list = field(default_factory=list)  # must be exactly 0.0
    batch_std: object = None  # the exact batch std (Fraction) for batch scales, when defined


SKIP = "skip"  # an element of a group that was not sampled: not compared


def _moments(vals):
    """Exact (mean, M2, max |x - mean|) of finite floats: each is an integer times 2^E for one
    E, so the sums are integer sums (fast, even for 1e-300 next to 1e300)."""
    parts = [math.frexp(v) for v in vals]
    exps = [e - 53 for _, e in parts]
    lo = min(exps)
    xs = [int(m * 9007199254740992.0) << (e - lo) for (m, _), e in zip(parts, exps)]
    n, s = len(xs), sum(xs)
    unit = F(2) ** lo
    m2 = F(n * sum(x * x for x in xs) - s * s, n) * unit * unit
    maxdev = F(max(abs(n * x - s) for x in xs), n) * unit
    return F(s, n) * unit, m2, maxdev


def reference(values, codes, n_groups, *, center, scale, ddof, eps, singleton, nan, out_dtype,
              sample_groups=None) -> Expected:
    """The exact result for rewards `values` (Python floats, the exact input values) in groups
    `codes` (group index per reward; groups may be empty). With `sample_groups` (a set), only
    the advantages of those groups are computed (others are SKIP); statistics use all."""
    n = len(values)
    finite = [math.isfinite(v) for v in values]
    exp = Expected()
    if nan == "raise" and not all(finite):
        exp.raises, exp.why = True, f"rewards[{finite.index(False)}] is not finite and nan='raise'"
        return exp
    valid = finite if nan == "omit" else [True] * n
    members = [[] for _ in range(n_groups)]
    for i, c in enumerate(codes):
        members[c].append(i)
    out_u = 2.0**-24 if out_dtype == np.float32 else U64
    out_tiny = 2.0**-149 if out_dtype == np.float32 else TINY64
    out_max = F32_MAX if out_dtype == np.float32 else F64_MAX

    cnt = [0] * n_groups
    poisoned = [False] * n_groups
    mu = [F(0)] * n_groups
    m2 = [F(0)] * n_groups
    std = [None] * n_groups  # exact group std (Fraction), or None
    delta = [0.0] * n_groups  # float64 error bound of a residual r - mu in this group
    for g, idx in enumerate(members):
        vi = [i for i in idx if valid[i]]
        cnt[g] = len(vi)
        poisoned[g] = nan == "propagate" and any(not finite[i] for i in idx)
        if poisoned[g] or not vi:
            continue
        mu[g], m2[g], maxdev = _moments([values[i] for i in vi])
        big = max(abs(values[i]) for i in vi)
        delta[g] = 8 * (len(vi) + 2) * (U64 * big + TINY64)
        if sum(abs(values[i]) for i in vi) > OVERFLOW_ZONE or maxdev > OVERFLOW_ZONE:
            exp.may_raise, exp.may_raise_why = True, f"group {g} sums beyond 1e307"
        if len(vi) - ddof > 0:
            std[g] = fsqrt(m2[g] / (len(vi) - ddof))
            if std[g] > OVERFLOW_ZONE:
                exp.may_raise, exp.may_raise_why = True, f"group {g} std beyond 1e307"

    if singleton == "error":
        for g in range(n_groups):
            if cnt[g] == 1 and not poisoned[g]:
                exp.raises, exp.why = True, f"group {g} is a singleton and singleton='error'"
                return exp

    batch = scale in ("batch", "batch_residual")
    bstd = None  # exact batch std (Fraction), or None for NaN
    brel = 0.0
    if batch and not any(poisoned):
        vi = [i for i in range(n) if valid[i]]
        nv = len(vi)
        if nv > ddof:
            if scale == "batch":
                bmean, bm2, maxdev = _moments([values[i] for i in vi])
                big = max(abs(values[i]) for i in vi)
                bdelta = 8 * (nv + 2) * (U64 * big + TINY64)
                if sum(abs(values[i]) for i in vi) > OVERFLOW_ZONE or maxdev > OVERFLOW_ZONE:
                    exp.may_raise, exp.may_raise_why = True, "batch sums beyond 1e307"
            else:
                bm2 = sum(m2, F(0))
                bdelta = max(delta)
            bstd = fsqrt(bm2 / (nv - ddof))
            exp.batch_std = bstd
            if bstd > OVERFLOW_ZONE:
                exp.may_raise, exp.may_raise_why = True, "batch std beyond 1e307"
            if bstd > 0:
                brel = 2 * _float(F(bdelta) / bstd) + (nv + 4) * U64

    feps = F(eps)
    for i in range(n):
        g = codes[i]
        if sample_groups is not None and g not in sample_groups:
            exp.adv.append(SKIP), exp.tol.append(0.0), exp.exact_zero.append(False)
            continue
        if not valid[i]:
            exp.adv.append(F(0)), exp.tol.append(0.0), exp.exact_zero.append(True)
            continue
        if poisoned[g]:
            exp.adv.append(None), exp.tol.append(0.0), exp.exact_zero.append(False)
            continue
        r = F(values[i])
        if cnt[g] >= 2:
            f = F(cnt[g], cnt[g] - 1) if center == "loo" else F(1)
            num = r - mu[g] if center != "none" else r
            dnum = delta[g] if center != "none" else 0.0
            if scale == "group":
                s, srel = std[g], (2 * _float(F(delta[g]) / std[g]) + (cnt[g] + 4) * U64) if std[g] else 0.0
            elif scale == "none":
                s, srel = F(1), 0.0
            else:
                s, srel = bstd, brel
        else:  # singleton (cnt == 1)
            if singleton == "zero":
                exp.adv.append(F(0)), exp.tol.append(0.0), exp.exact_zero.append(True)
                continue
            f, num, dnum = F(1), r, 0.0
            if scale == "group":
                s, srel = F(1), 0.0
            elif scale == "none":
                s, srel = F(1), 0.0
            else:
                s, srel = bstd, brel
        if s is None:  # undefined batch std (ddof=1, one valid reward) or a poisoned batch
            exp.adv.append(None), exp.tol.append(0.0), exp.exact_zero.append(False)
            continue
        d = s if scale == "none" else s + feps
        if d == 0:
            exp.adv.append(F(0)), exp.tol.append(0.0), exp.exact_zero.append(True)
            continue
        a = f * num / d
        all_equal = num == 0 and dnum and cnt[g] >= 2 and m2[g] == 0
        fa, ff = abs(_float(a)), float(f)
        tol = 2 * (ff * _float(F(dnum) / d) + fa * (srel * _float(s / d) + 8 * U64)) + fa * out_u + out_tiny
        exp.adv.append(a), exp.tol.append(tol), exp.exact_zero.append(bool(all_equal))
        rel = tol / fa if 0 < fa < math.inf else 0.0
        if fa == math.inf or fa * (1 - rel) > out_max:
            exp.raises, exp.why = True, f"advantage {i} ({_float(a):.3g}) beyond the output range"
        elif fa * (1 + rel) > out_max:
            exp.may_raise, exp.may_raise_why = True, f"advantage {i} at the output range"
    return exp


def _float(q: F) -> float:
    try:
        return float(q)
    except OverflowError:
        return math.inf if q > 0 else -math.inf


def compare(got: np.ndarray, exp: Expected) -> str | None:
    """None if `got` satisfies `exp` (an `ok` outcome), else a description of the first miss."""
    for i, (g, a, tol, z) in enumerate(zip(got.tolist(), exp.adv, exp.tol, exp.exact_zero)):
        if a is SKIP:
            continue
        if a is None:
            if not math.isnan(g):
                return f"[{i}] got {g!r}, expected NaN"
            continue
        if math.isnan(g) or math.isinf(g):
            return f"[{i}] got {g!r}, expected {_float(a)!r}"
        if z:
            if g != 0.0:
                return f"[{i}] got {g!r}, expected exactly 0.0"
            continue
        if abs(g - _float(a)) <= 0.5 * tol:  # clearly inside: skip the exact comparison
            continue
        err = abs(F(g) - a)
        if tol < math.inf and err > F(tol):
            return f"[{i}] got {g!r}, expected {_float(a)!r} (error {float(err):.3g} > tolerance {tol:.3g})"
    return None


def reference_group_stats(values, codes, n_groups, *, ddof, nan):
    """Exact per-group (count, mean, std) for ``groupadv.group_stats``: a dict with "raises",
    "may_raise" and per group (count, mean Fraction | None for NaN, std Fraction | None for
    NaN, mean tolerance, std tolerance)."""
    n = len(values)
    finite = [math.isfinite(v) for v in values]
    if nan == "raise" and not all(finite):
        return {"raises": True, "may_raise": False, "groups": []}
    valid = finite if nan == "omit" else [True] * n
    members = [[] for _ in range(n_groups)]
    for i, c in enumerate(codes):
        members[c].append(i)
    out, may_raise = [], False
    for idx in members:
        vi = [i for i in idx if valid[i]]
        bad = nan == "propagate" and any(not finite[i] for i in idx)
        if bad:  # IEEE propagation: NaN, or +-inf for a group of same-signed infinities
            out.append((len(vi), "nonfinite", "nonfinite", 0.0, 0.0))
            continue
        if not vi:
            out.append((0, None, None, 0.0, 0.0))
            continue
        mean, m2, maxdev = _moments([values[i] for i in vi])
        big = max(abs(values[i]) for i in vi)
        delta = 8 * (len(vi) + 2) * (U64 * big + TINY64)
        if sum(abs(values[i]) for i in vi) > OVERFLOW_ZONE or maxdev > OVERFLOW_ZONE:
            may_raise = True
        if len(vi) - ddof <= 0:
            out.append((len(vi), mean, None, delta, 0.0))
            continue
        std = fsqrt(m2 / (len(vi) - ddof))
        if std > OVERFLOW_ZONE:
            may_raise = True
        stol = 0.0 if std == 0 else 2 * (2 * delta + (len(vi) + 4) * U64 * _float(std)) + TINY64
        out.append((len(vi), mean, std, delta, stol))
    return {"raises": False, "may_raise": may_raise, "groups": out}
