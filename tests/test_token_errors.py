"""The token passes' errors (scans, masked whitening) after their fold into the core's one
fault path (policy's AdvError / fault_error): the same exception types, attributes and
messages on every backend."""

from __future__ import annotations

import re

import numpy as np
import pytest

import groupadv as ga
from groupadv.errors import AdvantageOverflowError, NonFiniteRewardError

FLAGS = np.ones((1, 3), np.int64)


def test_scan_non_finite_reward_and_value_name_the_token():
    r = np.array([[1.0, np.nan, 0.0]])
    with pytest.raises(NonFiniteRewardError, match=re.escape(
            "rewards[0, 1] (sample 0) is NaN; pass nan='propagate' to allow non-finite inputs")) as e:
        ga.discounted_returns(r, FLAGS, 0.9)
    assert e.value.index == 1 and np.isnan(e.value.value)
    v = np.array([[0.0, 0.0, np.inf]])
    with pytest.raises(NonFiniteRewardError, match=re.escape(
            "values[0, 2] (sample 0) is inf; pass nan='propagate' to allow non-finite inputs")) as e:
        ga.gae(np.zeros((1, 3)), v, FLAGS, 0.9, 0.9)
    assert e.value.index == 2 and e.value.value == np.inf


def test_scan_overflow_names_the_response():
    with pytest.raises(AdvantageOverflowError, match=re.escape(
            "the returns of response 0 overflow the output dtype; rescale the rewards")) as e:
        ga.discounted_returns(np.array([[3e38, 3e38]], np.float32), np.ones((1, 2), np.int64), 1.0)
    assert e.value.index == 0


def test_whitening_errors():
    with pytest.raises(NonFiniteRewardError, match=re.escape(
            "values[0, 1] (sample 0) is NaN under the mask; pass nan='propagate' to allow non-finite values")):
        ga.masked_whiten(np.array([[1.0, np.nan, 2.0]]), np.array([[1, 1, 0]]))
    with pytest.raises(ValueError, match=re.escape(
            "the mask selects 1 token(s); masked whitening needs more than one (the unbiased variance "
            "divides by count - 1)")) as e:
        ga.masked_whiten(np.array([[1.0, 5.0, 2.0]]), np.array([[0, 1, 0]]))
    assert type(e.value) is ValueError
    with pytest.raises(AdvantageOverflowError, match="the masked values overflow float64 in their variance"):
        with np.errstate(over="ignore"):
            ga.masked_whiten(np.array([[1e300, -1e300, 2.0]]), np.array([[1, 1, 0]]))
