"""Regenerate tests/fixtures/peers.npz: golden outputs of the peers' own advantage code.

    python3 -m venv --system-site-packages .venv && PYTHON=.venv/bin/python bash scripts/install_verl.sh
    .venv/bin/python scripts/make_peer_fixtures.py

verl's estimators are *run* (``verl.trainer.ppo.core_algos``, the installed package). TRL and
OpenRLHF compute their advantages inline in their trainers (no importable function), so
those two are faithful transcriptions of the cited lines, run on torch here:
TRL 1.16 ``GRPOTrainer._generate_and_score_completions`` and ``RLOOTrainer`` (with their NaN
handling for unscorable completions and ``num_generations=1``); OpenRLHF 0.11
``experience_maker.py`` (group_norm / rloo / dr_grpo).

``python scripts/make_peer_fixtures.py otb`` rewrites only tests/fixtures/peers_otb.npz (verl's
optimal_token_baseline / tir_optimal_token_baseline, run).
"""

from __future__ import annotations

import pathlib

import numpy as np
import torch

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "peers.npz"
# verl's token-level estimators (gae, reinforce_plus_plus[_baseline], remax, masked_whiten): a
# file of their own, so that it can be regenerated alone (`--tokens`).
OUT_TOKENS = OUT.with_name("peers_tokens.npz")
# The group-level estimators of issue 12 (engineer "groups"): a file of their own.
OUT_GROUPS = OUT.parent / "peers_groups.npz"
# The optimal-token-baseline cases have their own file (one binary file per area merges cleanly).
OUT_OTB = OUT.with_name("peers_otb.npz")


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

    # Output dtypes for bf16 rewards with an int64 mask and with a float32 mask, and for an
    # empty batch; NaN in one response's reward with an int64 mask (NaN * 0 stays NaN in verl).
    names = ["grpo", "grpo_vectorized", "rloo", "rloo_vectorized"]
    dtypes = []
    for name in names:
        fn = ca.ADV_ESTIMATOR_REGISTRY[name]
        for rewards, mask in ((t.bfloat16(), m.long()), (t.bfloat16(), m), (t[:0], m[:0])):
            out = fn(rewards.clone(), mask, uids[:len(rewards)])[0]
            dtypes.append(f"{name} {len(rewards)} {rewards.dtype} {mask.dtype} -> {tuple(out.shape)} {out.dtype}")
        nan_t = t.clone()
        nan_t[0, 0] = float("nan")  # response 0 (uid u0)
        arrays[f"verl_{name}_nan"] = fn(nan_t, m.long(), uids)[0].double().numpy()
    arrays["verl_dtypes"] = np.array(dtypes)


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


def nanstd(tensor: torch.Tensor, dim=None, keepdim: bool = False) -> torch.Tensor:
    # TRL 1.16 trl/trainer/utils.py 1021-1048 (transcribed)
    mean = torch.nanmean(tensor, dim=dim, keepdim=True)
    variance = torch.nanmean((tensor - mean) ** 2, dim=dim, keepdim=True)
    count = torch.sum(~torch.isnan(tensor), dim=dim, keepdim=True)
    correction = count / (count - 1)
    correction = torch.where(count > 1, correction, torch.full_like(correction, float("nan")))
    variance *= correction
    std = torch.sqrt(variance)
    if keepdim:
        return std
    return std.squeeze(dim) if dim is not None else std.squeeze()


def trl_grpo_nan(rewards: torch.Tensor, num_generations: int, scale_rewards: str) -> torch.Tensor:
    # TRL 1.16 grpo_trainer.py 2759-2810: sum_then_normalize with one reward function
    # (rewards_per_func (N, 1), weight 1). The same lines as `trl_multi_reward`'s first branch
    # (f2cd577 2676-2729; multiplying by the weight 1 changes no bit), transcribed once there.
    return trl_multi_reward(rewards.unsqueeze(1), torch.ones(1), num_generations, "sum_then_normalize", scale_rewards)


def trl_rloo_nan(rewards: torch.Tensor, num_generations: int, normalize_advantages: bool) -> torch.Tensor:
    # TRL 1.16 rloo_trainer.py 1653-1699 (no reward clip, beta=0), transcribed.
    unscorable_mask = torch.isnan(rewards)
    rewards = torch.nan_to_num(rewards.clone(), nan=0.0)
    rewards[unscorable_mask] = torch.nan
    grouped_rewards = rewards.view(-1, num_generations)
    scorable_counts = (~torch.isnan(grouped_rewards)).sum(dim=1, keepdim=True)
    grouped_sum = torch.nansum(grouped_rewards, dim=1, keepdim=True)
    if num_generations > 1:
        baselines = (grouped_sum - grouped_rewards) / (scorable_counts - 1)
        advantages = rewards - baselines.view(-1)
    else:
        advantages = torch.zeros_like(rewards)
    if normalize_advantages:
        advantages = (advantages - torch.nanmean(advantages)) / (nanstd(advantages) + 1e-4)
    return torch.nan_to_num(advantages, nan=0.0)


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

    # TRL's unscorable completions: 4 prompts x 3, prompt 0 has one NaN, prompt 1 only one
    # scorable completion, prompt 2 none, prompt 3 all scorable; and num_generations=1.
    nan = float("nan")
    rn = np.array([1.0, nan, 0.25, nan, 0.5, nan, nan, nan, nan, 2.0, -1.0, 0.5], np.float32)
    arrays["trl_nan_rewards"] = rn
    tn = torch.from_numpy(rn)
    for s in ("group", "batch", "none"):
        arrays[f"trl_grpo_nan_{s}"] = trl_grpo_nan(tn.clone(), 3, s).numpy()
        arrays[f"trl_grpo_g1_{s}"] = trl_grpo_nan(tn.clone(), 1, s).numpy()
    for norm in (False, True):
        arrays[f"trl_rloo_nan_norm{int(norm)}"] = trl_rloo_nan(tn.clone(), 3, norm).numpy()
        arrays[f"trl_rloo_g1_norm{int(norm)}"] = trl_rloo_nan(tn.clone(), 1, norm).numpy()
    for e in ("group_norm", "rloo", "dr_grpo"):  # OpenRLHF with a NaN: its group is NaN
        arrays[f"openrlhf_nan_{e}"] = openrlhf(tn.clone(), 3, e).numpy()


def token_cases(arrays: dict) -> None:
    """verl 0.9.1 run on one fixed batch: 9 responses of up to 7 tokens, trailing padding,
    leading padding and an observation span (mask 0 inside the response); a KL-like term on
    every token plus the score at the last valid one; uids in 3 shuffled groups (one a
    singleton)."""
    from types import SimpleNamespace

    from verl.trainer.ppo import core_algos as ca
    from verl.utils import torch_functional as verl_F

    L = 7
    mask = np.zeros((9, L), np.float32)
    for i, (a, b) in enumerate([(0, 7), (0, 5), (0, 3), (2, 7), (4, 7), (0, 1), (0, 6), (1, 4), (0, 7)]):
        mask[i, a:b] = 1
    mask[0, 2:4] = 0  # an observation span (multi-turn)
    mask[6, 3] = 0
    rng = np.random.default_rng(2026)
    tlr = (rng.normal(scale=0.05, size=(9, L)) * mask).astype(np.float32)
    last = L - 1 - np.argmax(mask[:, ::-1], axis=1)
    tlr[np.arange(9), last] += np.array([1.0, 0.0, 0.5, 1.0, -0.5, 0.25, 0.75, 0.0, 1.0], np.float32)
    values = rng.normal(size=(9, L)).astype(np.float32)
    baselines = rng.normal(size=9).astype(np.float32)
    uids = np.array(["b", "a", "b", "c", "a", "b", "a", "b", "a"], dtype=object)
    t, v, m = torch.from_numpy(tlr), torch.from_numpy(values), torch.from_numpy(mask).long()
    arrays.update(tok_rewards=tlr, tok_values=values, tok_mask=mask, tok_baselines=baselines,
                  tok_uids=uids.astype(str))
    for gamma, lam in ((1.0, 1.0), (0.95, 0.9)):
        adv, ret = ca.compute_gae_advantage_return(t, v, m, gamma, lam)
        arrays[f"verl_gae_{gamma}_{lam}_adv"], arrays[f"verl_gae_{gamma}_{lam}_ret"] = adv.numpy(), ret.numpy()
    for gamma in (1.0, 0.9):
        adv, ret = ca.compute_reinforce_plus_plus_outcome_advantage(t, m, config=SimpleNamespace(gamma=gamma))
        arrays[f"verl_rfpp_{gamma}_adv"], arrays[f"verl_rfpp_{gamma}_ret"] = adv.numpy(), ret.numpy()
    adv, _ = ca.compute_reinforce_plus_plus_baseline_outcome_advantage(t, m, uids)
    arrays["verl_rfpp_baseline"] = adv.numpy()
    adv, ret = ca.compute_remax_outcome_advantage(t, torch.from_numpy(baselines), m)
    arrays["verl_remax_adv"], arrays["verl_remax_ret"] = adv.numpy(), ret.numpy()
    for shift in (True, False):
        arrays[f"verl_masked_whiten_{int(shift)}"] = verl_F.masked_whiten(t.double(), m, shift_mean=shift).numpy()


def write_token_fixtures() -> None:
    import verl

    arrays: dict = {}
    token_cases(arrays)
    arrays["versions"] = np.array([f"torch {torch.__version__}", f"verl {verl.__version__}"])
    np.savez(OUT_TOKENS, **arrays)
    print(f"wrote {OUT_TOKENS} ({', '.join(sorted(arrays))})")
def verl_group_cases(arrays: dict) -> None:
    """verl 0.9.1's grpo_passk (core_algos.py 471-530), opo (639-690), gpg (770-830) and gdpo
    (361-468), run on one batch: 16 responses in 3 interleaved uid groups (no singleton:
    grpo_passk raises on one), one of them all equal at 0.5 (exact in float32, so verl's
    results there are exact too), with three reward components for gdpo."""
    from verl.trainer.ppo import core_algos as ca

    scores = np.array([1.0, 0.0, 0.5, 0.25, 0.5, 0.75, 0.5, 1.0, 0.5, 0.0, 0.3, 0.5, 0.9, 0.6, 0.2, 0.5],
                      np.float32)
    uids = np.array(["a", "a", "b", "a", "b", "c", "b", "a", "b", "c", "c", "b", "c", "c", "a", "b"], dtype=object)
    L = 6
    lengths = np.array([6, 3, 4, 2, 5, 1, 3, 4, 5, 2, 3, 6, 5, 4, 1, 2])
    mask = (np.arange(L)[None, :] < lengths[:, None]).astype(np.float32)
    tlr = np.zeros((len(scores), L), np.float32)
    tlr[np.arange(len(scores)), lengths - 1] = scores
    rng = np.random.default_rng(12)
    comps = {f"r{j}": rng.integers(0, 3, len(scores)).astype(np.float32) * (0.5 + j) for j in range(3)}
    arrays.update(tlr=tlr, mask=mask, uids=uids.astype(str), **{f"gdpo_{k}": v for k, v in comps.items()})
    t, m = torch.from_numpy(tlr), torch.from_numpy(mask)
    for norm in (True, False):
        cfg = {"norm_adv_by_std_in_grpo": norm}
        arrays[f"grpo_passk_norm{int(norm)}"] = ca.compute_grpo_passk_outcome_advantage(t, m, uids, config=cfg)[0].numpy()
        arrays[f"gdpo_tokens_norm{int(norm)}"] = ca.compute_gdpo_outcome_advantage(
            t, m, uids, norm_adv_by_std_in_grpo=norm)[0].numpy()
    arrays["opo"] = ca.compute_opo_outcome_advantage(t, m, uids)[0].numpy()
    arrays["gpg"] = ca.compute_gpg_outcome_advantage(t, m, uids, f_norm=2.0)[0].numpy()
    batch = {"prompts": torch.ones(len(scores), 2, dtype=torch.long),
             "attention_mask": torch.cat([torch.ones(len(scores), 2, dtype=torch.long), m.long()], dim=1)}
    cfg = {"gdpo_reward_keys": ["r0", "r1", "r2"], "gdpo_reward_weights": [1.0, 0.5, -2.0]}
    arrays["gdpo_components"] = ca.compute_gdpo_outcome_advantage(
        t, m, uids, config=cfg, non_tensor_batch=dict(comps, uid=uids), batch=batch)[0].numpy()


def trl_multi_reward(rewards_per_func, reward_weights, num_generations, aggregation, scale_rewards):
    """trl/trainer/grpo_trainer.py 2676-2729 (huggingface/trl f2cd577, the newest stored
    snapshot), GRPOTrainer._generate_and_score_completions, transcribed (device and logging
    left out); nanstd: trl/trainer/utils.py 857-884."""

    # nanstd: the module-level transcription above (the same function in both TRL versions)
    unscorable_mask = torch.isnan(rewards_per_func).all(dim=1)
    if aggregation == "sum_then_normalize":
        rewards = (rewards_per_func * reward_weights.unsqueeze(0)).nansum(dim=1)
        rewards[unscorable_mask] = torch.nan
        mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)
        mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
        if scale_rewards in ["group", "none"]:
            if num_generations > 1:
                std_rewards = nanstd(rewards.view(-1, num_generations), dim=1)
                std_rewards = std_rewards.repeat_interleave(num_generations, dim=0)
            else:
                std_rewards = torch.zeros_like(rewards)
        else:
            std_rewards = nanstd(rewards).expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
        advantages = rewards - mean_grouped_rewards
        if scale_rewards != "none":
            advantages = advantages / (std_rewards + 1e-4)
    else:
        k = rewards_per_func.shape[1]
        grouped = rewards_per_func.view(-1, num_generations, k)
        mean_k = torch.nanmean(grouped, dim=1, keepdim=True)
        std_k = nanstd(grouped, dim=1, keepdim=True) if num_generations > 1 else torch.zeros_like(mean_k)
        reward_k = ((grouped - mean_k) / (std_k + 1e-4)).view(-1, k)
        rewards = (reward_k * reward_weights.unsqueeze(0)).nansum(dim=1)
        rewards[unscorable_mask] = torch.nan
        std_rewards = nanstd(rewards).expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
        advantages = (rewards - torch.nanmean(rewards)) / (std_rewards + 1e-4)
    return torch.nan_to_num(advantages, nan=0.0)


def trl_group_cases(arrays: dict) -> None:
    """TRL's multi-reward GRPO: 4 prompts x 3 generations, 3 reward functions with weights;
    a None (NaN) from some functions, one unscorable completion, an all-equal component."""
    nan = float("nan")
    r = np.array([[1.0, 0.5, nan], [0.0, 0.5, 2.0], [1.0, 0.5, 1.0],
                  [nan, nan, nan], [2.0, 1.0, 0.0], [0.0, nan, 1.0],
                  [0.5, 0.0, 0.0], [0.5, 1.0, 3.0], [0.5, 2.0, 0.0],
                  [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [3.0, -1.0, 0.25]], np.float32)
    w = torch.tensor([1.0, 0.5, 2.0])
    arrays["trl_rewards_per_func"] = r
    arrays["trl_reward_weights"] = w.numpy()
    for agg in ("sum_then_normalize", "normalize_then_sum"):
        for s in ("group", "batch", "none"):
            for g in (3, 1):
                arrays[f"trl_{agg}_{s}_g{g}"] = trl_multi_reward(torch.from_numpy(r), w, g, agg, s).numpy()
def otb_cases(arrays: dict) -> None:
    """verl's optimal_token_baseline and tir_optimal_token_baseline (core_algos.py 871-1121),
    run: 14 responses of L=7 in 4 string-uid groups (interleaved): a spread group with a unique
    longest response (the zero tail), a group of two identical responses (verl's eps noise), a
    singleton, and a group with an empty response; masks with holes (tool tokens) for the
    multi-turn form; with and without rollout IS weights; float32 and float64."""
    from verl.trainer.ppo import core_algos as ca

    rng = np.random.default_rng(2026)
    uids = np.array(["p0", "p1", "p0", "p2", "p3", "p0", "p1", "p3", "p0", "p3", "p0", "p3", "p3", "p0"], dtype=object)
    L, bs = 7, len(uids)
    lengths = np.array([7, 4, 3, 5, 0, 2, 4, 6, 5, 6, 1, 3, 2, 4])
    mask = (np.arange(L)[None, :] < lengths[:, None]).astype(np.float32)
    holes = mask.copy()
    holes[[0, 7, 9], [2, 3, 1]] = 0.0  # tool tokens inside three responses
    tlr = (rng.normal(size=(bs, L)) * mask).astype(np.float32)
    tlr[6] = tlr[1]  # p1: two identical responses
    pi = rng.uniform(0.05, 1.0, (bs, L))
    lp = np.log(pi).astype(np.float32)
    spi2 = (pi**2 + rng.random((bs, L)) * (1 - pi) ** 2).astype(np.float32)
    rho = rng.uniform(0.5, 1.5, (bs, L)).astype(np.float32)
    arrays.update(otb_tlr=tlr, otb_mask=mask, otb_holes=holes, otb_uids=uids.astype(str), otb_lp=lp,
                  otb_spi2=spi2, otb_rho=rho)
    for name in ("optimal_token_baseline", "tir_optimal_token_baseline"):
        fn = ca.ADV_ESTIMATOR_REGISTRY[name]
        for mname in ("mask", "holes"):
            for with_is in (False, True):
                for dt in (torch.float32, torch.float64):
                    args = [torch.from_numpy(a).to(dt) for a in (tlr, arrays[f"otb_{mname}"], lp, spi2)]
                    w = torch.from_numpy(rho).to(dt) if with_is else None
                    adv, ret = fn(args[0], args[1], uids, args[2], args[3], w)
                    key = f"verl_{name}_{mname}_is{int(with_is)}_{str(dt).split('.')[-1]}"
                    arrays[key + "_adv"], arrays[key + "_ret"] = adv.numpy(), ret.numpy()


def main() -> None:
    import sys

    if sys.argv[1:] == ["otb"]:  # only the optimal-token-baseline file
        import verl

        otb: dict = {"versions": np.array([f"torch {torch.__version__}", f"verl {verl.__version__}"])}
        otb_cases(otb)
        np.savez(OUT_OTB, **otb)
        print(f"wrote {OUT_OTB} ({len(otb)} arrays)")
        return
    if "--tokens" in sys.argv:
        write_token_fixtures()
        return
    write_token_fixtures()
    arrays: dict = {}
    verl_cases(arrays)
    flat_cases(arrays)
    import verl

    arrays["versions"] = np.array([f"torch {torch.__version__}", f"verl {verl.__version__}"])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez(OUT, **arrays)
    print(f"wrote {OUT} ({', '.join(sorted(arrays))})")
    groups: dict = {}
    verl_group_cases(groups)
    trl_group_cases(groups)
    groups["versions"] = arrays["versions"]
    np.savez(OUT_GROUPS, **groups)
    print(f"wrote {OUT_GROUPS} ({', '.join(sorted(groups))})")
    main_otb = {"versions": arrays["versions"]}
    otb_cases(main_otb)
    np.savez(OUT_OTB, **main_otb)
    print(f"wrote {OUT_OTB} ({len(main_otb)} arrays)")


if __name__ == "__main__":
    main()
