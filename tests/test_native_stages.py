"""The compiled core's stages, called through groupadv._native directly (the Python API on top
is tested in the other files): the moments stage (group_moments, merge_moments, moments_std),
advantages(batch_std=, moments=), the regression cases of issue 10, thread-count bit-identity
above the serial threshold, and the bit-identity of the compiled SIMD copies of the write pass
(reported as skipped, not passed, on a CPU that cannot run a copy)."""

from __future__ import annotations

import numpy as np
import pytest

native = pytest.importorskip("groupadv._native")

SERIAL_BELOW = 1 << 17  # src/parallel.rs


def adv(x, grouping, scale="group", center="mean", ddof=0, eps=0.0, nan="raise", threads=1, **kw):
    out = np.empty_like(x)
    native.advantages(x, out, grouping, center, scale, ddof, eps, "zero", nan, threads, **kw)
    return out


@pytest.mark.parametrize("isa", ["avx2", "avx512f"])
def test_compiled_simd_copy_matches_generic_bit_for_bit(isa):
    if not native._kernel_self_check(isa):
        pytest.skip(f"this CPU cannot run the {isa} copy of the write pass")


def test_subnormal_spread_gives_minus_one_one():
    # Issue 10: gave [0, 1] (the mean 7.5e-324 is not an f64).
    x = np.array([5e-324, 1e-323])
    np.testing.assert_array_equal(adv(x, native.grouping_uniform(2, 2)), [-1.0, 1.0])
    g, _ = native.grouping_ids_int(np.array([0, 1, 0, 1]))
    x4 = np.array([5e-324, 1e-323, 1e-323, 5e-324])
    np.testing.assert_array_equal(adv(x4, g), [-1.0, 1.0, 1.0, -1.0])


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
def test_opposite_extreme_means_in_batch_scale_raise_overflow(threads):
    # Issue 10: gave eight NaNs under nan="raise".
    x = np.array([1.7e308, 1.7e308, -1.7e308, -1.7e308, 1.7e308, 1.7e308, 1, 2])
    with pytest.raises(ValueError, match="overflow"):
        adv(x, native.grouping_uniform(8, 2), scale="batch", threads=threads)


@pytest.mark.parametrize("scale", ["batch", "batch_residual"])
def test_batch_std_is_a_core_parameter(scale):
    g = native.grouping_uniform(4, 2)
    x = np.array([0.0, 2.0, 10.0, 14.0])
    np.testing.assert_array_equal(adv(x, g, scale=scale, eps=0.5, batch_std=1.5), [-0.5, 0.5, -1.0, 1.0])
    # Issue 10: float32 rewards with batch_std=1e-300 gave +-inf.
    with pytest.raises(ValueError, match="overflow"):
        adv(np.array([0, 1, 3, 3], dtype=np.float32), g, scale=scale, batch_std=1e-300)
    with pytest.raises(ValueError, match="batch_std"):
        adv(x, g, scale=scale, batch_std=-1.0)
    with pytest.raises(ValueError, match="batch_std"):
        adv(x, g, scale="group", batch_std=1.0)


def test_group_moments_merge_and_std():
    x = np.array([0.2, 0.5, 0.8, 0.3, 0.7, 3.0])
    g = native.grouping_offsets(6, np.array([0, 3, 5, 5, 6]))
    count, mean, m2, scale = native.group_moments(x, g, "raise", None, 1)
    np.testing.assert_array_equal(count, [3, 2, 0, 1])
    np.testing.assert_allclose(mean[[0, 1, 3]], [0.5, 0.5, 3.0])
    np.testing.assert_array_equal(scale, [1, 1, 1, 1])
    std = native.moments_std((count, mean, m2, scale), 0)
    np.testing.assert_allclose(std[[0, 1, 3]], [np.std(x[:3]), np.std(x[3:5]), 0.0])
    assert np.isnan(std[2])
    # The halves of each group, merged, are the whole.
    a = native.group_moments(x[[0, 1, 3, 5]], native.grouping_offsets(4, np.array([0, 2, 3, 3, 4])), "raise", None, 1)
    b = native.group_moments(x[[2, 4]], native.grouping_offsets(2, np.array([0, 1, 2, 2, 2])), "raise", None, 1)
    merged = native.merge_moments(a, b)
    np.testing.assert_array_equal(merged[0], count)
    np.testing.assert_allclose(merged[1][[0, 1, 3]], mean[[0, 1, 3]])
    np.testing.assert_allclose(native.moments_std(merged, 0)[[0, 1, 3]], std[[0, 1, 3]])
    # Frequency weights: weight 2 counts a reward twice.
    w = np.array([2.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    cw, mw, m2w, _ = native.group_moments(x, g, "raise", w, 1)
    assert cw[0] == 3 and mw[0] == pytest.approx((0.4 + 0.8) / 3)
    with pytest.raises(ValueError, match="weights"):
        native.group_moments(x, g, "raise", -w, 1)
    with pytest.raises(ValueError, match="rewards\\[1\\]"):
        native.group_moments(np.array([0.0, np.nan]), native.grouping_uniform(2, 2), "raise", None, 1)


def test_huge_and_tiny_moments_are_scaled_not_lost():
    for unit in (1e200, 1e-200, 1e-310):
        x = np.array([-1.0, 1.0, 3.0]) * unit
        c, m, m2, s = native.group_moments(x, native.grouping_uniform(3, 3), "raise", None, 1)
        assert s[0] != 1.0
        std = native.moments_std((c, m, m2, s), 0)[0]
        assert std == pytest.approx(np.std(x / unit) * unit, rel=1e-12)


def test_advantages_from_given_moments():
    rng = np.random.default_rng(0)
    x = rng.normal(size=64)
    g = native.grouping_uniform(64, 8)
    m = native.group_moments(x, g, "raise", None, 1)
    for scale in ("group", "batch", "batch_residual", "none"):
        np.testing.assert_allclose(adv(x, g, scale=scale, moments=m), adv(x, g, scale=scale), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="moments"):
        adv(x, g, moments=tuple(v[:3] for v in m))


@pytest.mark.parametrize("scale", ["batch", "batch_residual"])
@pytest.mark.parametrize("layout", ["uniform", "ragged"])
def test_batch_scales_are_bit_identical_for_any_thread_count(scale, layout):
    n = 3 * SERIAL_BELOW + 999
    rng = np.random.default_rng(1)
    x = rng.normal(size=n)
    if layout == "uniform":
        n = n // 16 * 16
        x = x[:n]
        g = native.grouping_uniform(n, 16)
    else:
        sizes = rng.integers(0, 40, size=n // 10)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        offsets = offsets[offsets < n]
        g = native.grouping_offsets(n, np.append(offsets, n).astype(np.int64))
    one = adv(x, g, scale=scale, threads=1)
    for threads in (2, 3, 4):
        np.testing.assert_array_equal(adv(x, g, scale=scale, threads=threads).view(np.uint64), one.view(np.uint64))
