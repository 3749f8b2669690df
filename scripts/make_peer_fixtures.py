"""Regenerate tests/fixtures/peers.npz: golden outputs of the peers' own advantage code.

    pip install torch verl==0.9.1 --no-deps && pip install tensordict omegaconf codetiming transformers
    python scripts/make_peer_fixtures.py

verl's estimators are *run* (``verl.trainer.ppo.core_algos``, the installed package). TRL and
OpenRLHF compute their advantages inline in their trainers (no importable function), so
those two are faithful transcriptions of the cited lines, run on torch here:
TRL 1.16 ``GRPOTrainer._generate_and_score_completions`` and ``RLOOTrainer``; OpenRLHF 0.11
``experience_maker.py`` (group_norm / rloo / dr_grpo).
"""

from __future__ import annotations

import pathlib

import numpy as np
import torch

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "peers.npz"


def verl_cases(arrays: dict) -> None:
    from verl.trainer.ppo import core_algos as ca

    # 18 responses in 4 uid groups, interleaved as verl's string uids: u0 (4, spread), u1 (8 x 0.1:
    # all equal, where float32 rounding shows), u2 (a singleton), u3 (5, spread).
    scores = np.array([1.0, 0.0, 0.1, 0.5, 0.1, 0.7, 0.1, 1.0, 0.25, 0.8, 0.3,
                       0.1, 0.1, 0.1, 0.1, 0.1, 0.9, 0.6], np.float32)
    uids = np.array(["u0", "u0", "u1", "u0", "u1", "u3", "u1", "u0", "u3", "u2", "u3",
                     "u1", "u1", "u1", "u1", "u1", "u3", "u3"], dtype=object)
    L = 5
    lengths = np.array([5, 3, 4, 2, 5, 1, 3, 4, 5, 2, 3, 5, 5, 4, 1, 2, 3, 5])
    mask = (np.arange(L)[None, :] < lengths[:, None]).astype(np.float32)
    tlr = np.zeros((len(scores), L), np.float32)
    tlr[np.arange(len(scores)), lengths - 1] = scores  # the reward at the last valid token
    arrays.update(verl_tlr=tlr, verl_mask=mask, verl_uids=uids.astype(str))
    t, m = torch.from_numpy(tlr), torch.from_numpy(mask)
    for norm in (True, False):
        adv, ret = ca.compute_grpo_outcome_advantage(t, m, uids, norm_adv_by_std_in_grpo=norm)
        assert adv.data_ptr() == ret.data_ptr()
        arrays[f"verl_grpo_norm{int(norm)}"] = adv.numpy()
    if hasattr(ca, "compute_grpo_vectorized_outcome_advantage"):
        adv, _ = ca.compute_grpo_vectorized_outcome_advantage(t, m, uids)
        arrays["verl_grpo_vectorized"] = adv.numpy()
    adv, _ = ca.compute_rloo_outcome_advantage(t, m, uids)
    arrays["verl_rloo"] = adv.numpy()
    if hasattr(ca, "compute_rloo_vectorized_outcome_advantage"):
        adv, _ = ca.compute_rloo_vectorized_outcome_advantage(t, m, uids)
        arrays["verl_rloo_vectorized"] = adv.numpy()


def trl_grpo(rewards: torch.Tensor, num_generations: int, scale_rewards: str) -> torch.Tensor:
    # TRL 1.16 GRPOTrainer._generate_and_score_completions (transcribed)
    mean_grouped_rewards = rewards.view(-1, num_generations).mean(dim=1)
    mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
    advantages = rewards - mean_grouped_rewards
    if scale_rewards in ["group", "none"]:
        std_rewards = rewards.view(-1, num_generations).std(dim=1)
        std_rewards = std_rewards.repeat_interleave(num_generations, dim=0)
    elif scale_rewards == "batch":
        std_rewards = rewards.std().expand_as(rewards)
    if scale_rewards != "none":
        advantages = advantages / (std_rewards + 1e-4)
    return advantages


def openrlhf(rewards: torch.Tensor, n: int, estimator: str) -> torch.Tensor:
    # OpenRLHF 0.11 experience_maker.py (transcribed)
    rewards = rewards.reshape(-1, n)
    if estimator == "rloo":
        baseline = (rewards.sum(-1, keepdim=True) - rewards) / (n - 1)
        rewards = rewards - baseline
    elif estimator == "group_norm":
        rewards = (rewards - rewards.mean(-1, keepdim=True)) / (rewards.std(-1, keepdim=True) + 1e-9)
    elif estimator == "dr_grpo":
        rewards = rewards - rewards.mean(-1, keepdim=True)
    return rewards.reshape(-1)


def flat_cases(arrays: dict) -> None:
    # 3 prompts x 8 generations; prompt 1 is all-equal (8 x 0.1), where float32 rounding shows.
    r = np.array([1, 0, 0, 1, 0.2, 0.9, 0.4, 0.4] + [0.1] * 8 + [3, -1, 0.5, 2, 0, 0, 1, 0.25], np.float32)
    arrays["flat_rewards"] = r
    t = torch.from_numpy(r)
    for s in ("group", "batch", "none"):
        arrays[f"trl_grpo_{s}"] = trl_grpo(t, 8, s).numpy()
    for e in ("group_norm", "rloo", "dr_grpo"):
        arrays[f"openrlhf_{e}"] = openrlhf(t, 8, e).numpy()


def main() -> None:
    arrays: dict = {}
    verl_cases(arrays)
    flat_cases(arrays)
    import verl

    arrays["versions"] = np.array([f"torch {torch.__version__}", f"verl {verl.__version__}"])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez(OUT, **arrays)
    print(f"wrote {OUT} ({', '.join(sorted(arrays))})")


if __name__ == "__main__":
    main()
