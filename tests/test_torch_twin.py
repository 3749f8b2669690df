"""The torch twin (the device path) passes the same rules tables as the backends. There is no
GPU on the test machines: ``_torch.FORCE_DEVICE_PATH`` sends CPU tensors through the device
code. Every test runs on both tensor paths ("cpu": through numpy and the active backend;
"device": the torch twin)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import groupadv as ga  # noqa: E402
from groupadv import _torch  # noqa: E402
from test_bad_inputs import ACCEPTED, ERRORS, MAX  # noqa: E402

# Entries whose inputs are not tensors (or whose checks are numpy-buffer specific).
_NUMPY_ONLY = ("out", "num_threads", "decimals")


@pytest.fixture(params=["cpu", "device"])
def path(request):
    before = _torch.FORCE_DEVICE_PATH
    _torch.FORCE_DEVICE_PATH = request.param == "device"
    yield request.param
    _torch.FORCE_DEVICE_PATH = before


def _tensor(r):
    a = np.asarray(r)
    if a.dtype.kind == "f" and a.dtype.byteorder not in "=|":
        a = a.astype(a.dtype.newbyteorder("="))
    if a.dtype.kind in "iu" and a.dtype.byteorder not in "=|":
        a = a.astype(a.dtype.newbyteorder("="))
    return torch.from_numpy(np.ascontiguousarray(a))


def _tensorable(kwargs) -> bool:
    a = np.asarray(kwargs["rewards"]) if not isinstance(kwargs["rewards"], list) else np.array(kwargs["rewards"], dtype=object)
    if isinstance(kwargs["rewards"], list):
        if not all(isinstance(v, (int, float)) for v in kwargs["rewards"]):
            return False
        try:
            a = np.array(kwargs["rewards"], dtype=np.float64)
        except (TypeError, ValueError):
            return False
    return a.dtype.kind in "fiu" and a.ndim >= 1 and a.size > 0 and not any(k in kwargs for k in _NUMPY_ONLY) \
        and a.dtype != np.uint64


TENSOR_ERRORS = [e for e in ERRORS if _tensorable(e[1])]


@pytest.mark.parametrize("kwargs,exc,match", [e[1:] for e in TENSOR_ERRORS], ids=[e[0] for e in TENSOR_ERRORS])
def test_bad_input_raises_on_every_path(path, kwargs, exc, match):
    kw = dict(kwargs, rewards=_tensor(np.array(kwargs["rewards"], dtype=np.float64)
                                      if isinstance(kwargs["rewards"], list) else kwargs["rewards"]))
    with pytest.raises(exc, match=match):
        ga.advantages(**kw)


TENSOR_ACCEPTED = [a for a in ACCEPTED if _tensorable(a[1]) and np.asarray(a[1]["rewards"]).dtype.kind == "f"]


@pytest.mark.parametrize("kwargs,expected", [a[1:] for a in TENSOR_ACCEPTED], ids=[a[0] for a in TENSOR_ACCEPTED])
def test_accepted_input_gives_the_exact_result_on_every_path(path, kwargs, expected):
    got = ga.advantages(**dict(kwargs, rewards=_tensor(kwargs["rewards"])))
    assert isinstance(got, torch.Tensor)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-15, equal_nan=True)


OPTIONS = [
    dict(center=c, scale=s, ddof=d, eps=e, singleton=sg, nan=nn)
    for c in ("mean", "loo", "none")
    for s in ("group", "batch", "batch_residual", "none")
    for d in (0, 1)
    for e in (0.0, 1e-6)
    for sg in ("zero", "raw")
    for nn in ("propagate", "omit", "raise")
]


@pytest.mark.parametrize("opts", OPTIONS[::7])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["ids", "offsets"])
def test_numerics_equal_the_backend(path, opts, dtype, layout):
    rng = np.random.default_rng(hash((str(opts), layout)) % 2**32)
    x = (rng.integers(0, 4, 64) * 0.5 + rng.normal(size=64) * (rng.random(64) < 0.5)).astype(dtype)
    if opts["nan"] != "raise":
        x[[3, 17, 40]] = [np.nan, np.inf, -np.inf]
    kw = {"group_ids": rng.integers(0, 12, 64)} if layout == "ids" else {"offsets": [0, 1, 5, 5, 20, 40, 63, 64]}
    want = ga.advantages(x, **kw, **opts)
    got = ga.advantages(torch.from_numpy(x), **kw, **opts)
    assert got.dtype == torch.from_numpy(want).dtype
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got.numpy(), want, rtol=tol, atol=tol, equal_nan=True)


# --- issue 10: the device path's own bugs -------------------------------------------------------


@pytest.mark.parametrize("spread", [1e-200, 1e200])
def test_extreme_spreads_are_guarded(path, spread):
    """Spreads of 1e+-200 gave 0 on the device path (native: +-1)."""
    x = torch.tensor([0.0, spread, 0.0, 2 * spread], dtype=torch.float64)
    np.testing.assert_allclose(ga.grpo(x, 2).numpy(), [-1, 1, -1, 1], rtol=1e-12)
    np.testing.assert_allclose(ga.grpo(x, 2, scale="batch").numpy(), ga.grpo(x.numpy(), 2, scale="batch"), rtol=1e-12)
    assert ga.grpo(torch.tensor([5e-324, 1e-323], dtype=torch.float64), 2).tolist() == [-1.0, 1.0]


@pytest.mark.parametrize("r,dtype", [([0, 1.2e308, -1.2e308], torch.float64), ([0, 3e38, -3e38], torch.float32)])
def test_rloo_overflow_raises(path, r, dtype):
    """RLOO overflow gave inf/NaN on the device path; it is the overflow ValueError."""
    with pytest.raises(ValueError, match="overflow"):
        ga.rloo(torch.tensor(r, dtype=dtype), 3)


@pytest.mark.parametrize("scale", ["group", "batch", "batch_residual"])
def test_spread_overflow_near_f64_max_is_an_error(path, scale):
    x = torch.tensor([0.0, -MAX, MAX, 0.0, MAX, 0.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="overflow"):
        ga.advantages(x, 6, scale=scale)


@pytest.mark.parametrize("bad,name", [(dict(scale="foo"), "scale"), (dict(nan="skip"), "nan"),
                                      (dict(center="median"), "center"), (dict(singleton="drop"), "singleton")])
def test_unknown_options_are_value_errors(path, bad, name):
    """scale="foo" raised UnboundLocalError; unknown nan/center values were accepted."""
    with pytest.raises(ValueError, match=f"{name} must be one of"):
        ga.advantages(torch.tensor([1.0, 2.0, 3.0, 5.0]), 2, **bad)


def test_nan_tensor_labels_and_2d_rewards_are_refused(path):
    r = torch.tensor([1.0, 2.0, 3.0, 5.0])
    with pytest.raises(ValueError, match="NaN"):
        ga.grpo(r, group_ids=torch.tensor([0.0, float("nan"), 1.0, 1.0]))
    with pytest.raises(ValueError, match="1-D"):
        ga.grpo(r.reshape(2, 2), 2)
    np.testing.assert_allclose(ga.grpo(r, group_ids=torch.tensor([0.0, -0.0, 1.0, 1.0])).numpy(), [-1, 1, -1, 1])


def test_batch_std_on_every_path(path):
    r = torch.tensor([0.0, 1.0, 2.0, 3.0])
    assert ga.advantages(r, 2, scale="batch", batch_std=0.5).tolist() == [-1.0, 1.0, -1.0, 1.0]
    with pytest.raises(ValueError, match="overflow"):
        ga.advantages(r, 2, scale="batch", batch_std=1e-300)


# --- dtype policy: one for every path -----------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_half_in_half_out(path, dtype):
    r = torch.tensor([1.0, 2.0, 3.0, 5.0]).to(dtype)
    got = ga.grpo(r, 2)
    assert got.dtype == dtype and got.tolist() == [-1.0, 1.0, -1.0, 1.0]
    assert ga.grpo(torch.tensor([1, 2, 3, 5]), 2).dtype == torch.float64


@pytest.mark.parametrize("out_dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_out_of_any_float_dtype_is_written(path, out_dtype):
    """An out= bfloat16 tensor was silently left unwritten."""
    for dtype in (torch.bfloat16, torch.float32):
        out = torch.zeros(4, dtype=out_dtype)
        res = ga.grpo(torch.tensor([1.0, 2.0, 3.0, 5.0]).to(dtype), 2, out=out)
        assert res is out and out.tolist() == [-1.0, 1.0, -1.0, 1.0]


def test_half_output_overflow_is_an_error(path):
    with pytest.raises(ValueError, match="overflow"):
        ga.advantages(torch.tensor([0.0, 1e4, 0.0, 2e4]), 2, scale="batch",
                      batch_std=1e-3, out=torch.empty(4, dtype=torch.float16))


def test_bf16_token_scores_are_summed_wide(path):
    """bf16 rows [0.1,0.2,0.3] and [0,0,0.6] of one uid: CPU +-0.705, the device path gave 0."""
    t = torch.tensor([[0.1, 0.2, 0.3], [0.0, 0.0, 0.6]], dtype=torch.bfloat16)
    m = torch.ones(2, 3, dtype=torch.bool)
    got = ga.token_advantages(t, m, group_ids=["u", "u"], preset="verl")
    assert got.dtype == torch.bfloat16
    np.testing.assert_allclose(got.float().numpy(), [[-0.705] * 3, [0.705] * 3], atol=5e-3)
    out = torch.zeros(2, 3, dtype=torch.bfloat16)
    assert ga.token_advantages(t, m, group_ids=["u", "u"], preset="verl", out=out) is out
    assert torch.equal(out, got)


def test_numpy_float16_tokens_keep_their_dtype():
    t = np.array([[0.1, 0.2, 0.3], [0.0, 0.0, 0.6]], dtype=np.float16)
    got = ga.token_advantages(t, np.ones((2, 3), bool), group_ids=["u", "u"])
    assert got.dtype == np.float16 and got.tolist() == [[-1.0] * 3, [1.0] * 3]
    packed = ga.packed_token_advantages(t.reshape(-1), [3, 3], group_ids=["u", "u"])
    assert packed.dtype == np.float16 and packed.tolist() == [-1.0] * 3 + [1.0] * 3
