"""Presets fix the peers' ddof / eps / singleton conventions; explicit keywords win."""

from __future__ import annotations

import numpy as np
import pytest

import groupadv as ga


def test_preset_values():
    r = np.array([1.0, 2.0, 3.0, 6.0, 5.0])
    offs = [0, 4, 5]
    for name, p in ga.PRESETS.items():
        if p["singleton"] == "error":
            with pytest.raises(ValueError, match="single reward"):
                ga.grpo(r, offsets=offs, preset=name)
            continue
        got = ga.grpo(r, offsets=offs, preset=name)
        g = r[:4]
        np.testing.assert_allclose(got[:4], (g - g.mean()) / (g.std(ddof=1) + p["eps"]), rtol=1e-12)
        assert got[4] == 5.0 / (1 + p["eps"])  # verl's singleton: mean 0, std 1
    for name in ("trl", "openrlhf"):
        g = r[:4]
        got = ga.grpo(g, 4, preset=name)
        np.testing.assert_allclose(got, (g - g.mean()) / (g.std(ddof=1) + ga.PRESETS[name]["eps"]), rtol=1e-12)


def test_explicit_keywords_override_the_preset():
    r = np.array([1.0, 2.0, 3.0, 6.0])
    np.testing.assert_allclose(ga.grpo(r, 4, preset="verl", ddof=0, eps=0.0), ga.grpo(r, 4))
    assert ga.grpo(np.array([1.0, 2.0, 3.0]), offsets=[0, 2, 3], preset="trl", singleton="zero")[2] == 0.0
    with pytest.raises(ValueError, match="preset must be one of"):
        ga.grpo(r, 4, preset="ppo")
