"""Recipes: which settings each method trains with (`harness run --recipe equal|paper`).

* `equal` (the default): the harness's shared setting, as the committed results in results/ and
  leaderboards/ were made. On the embedded tasks every method gets mu = 4 and beta = 0.1
  (docs/RL_SETTINGS.md), and every method keeps the implementation those results were made with
  (`EQUAL_IMPLEMENTATION`: per-completion loss averaging, frozen reference, ...), so that they reproduce.
* `paper`: each method as its authors ran it - mu, beta, epsilon, mask-ratio schedule, group size,
  reference refresh and loss normalisation from the reference code (`PAPER`, one entry per method,
  each value with the file it comes from; docs/RECIPES.md shows the table). Only what the embedded tasks
  force is scaled, and it is the same for every method: the learning rate (3e-5 for a 0.85M-parameter
  model trained in full, not 3e-6 for LoRA on LLaDA-8B), prompts per step (8; theirs 16-256), steps,
  the rollout decoder (the task's gen length, block and 16 steps; temperature 1) and oversampling.

A recipe is applied by `TrainConfig.for_task`, under the user's `--set` overrides (which always win).
Results record the recipe (the run spec and the flat training config), and a leaderboard row is
always one recipe.
"""

from __future__ import annotations

RECIPES = ("equal", "paper")
DEFAULT_RECIPE = "equal"

# ---- equal ------------------------------------------------------------------------------------------
EQUAL_EMBEDDED_METHOD = {"mu": 4, "beta": 0.1}  # shared on the embedded tasks (docs/RL_SETTINGS.md)

# the implementation the committed `equal` results were made with (before the paper recipe existed);
# kept so that `--recipe equal` reproduces them
EQUAL_IMPLEMENTATION: dict[str, dict] = {
    "diffu-grpo": {"loss_norm": "sequence", "ref_sync_every": 0},
    "maskgrpo": {"loss_norm": "sequence", "ref_sync_every": 0, "score_padding": False},
    "unigrpo": {"loss_norm": "sequence", "ref_sync_every": 0},
    "coupled-grpo": {"loss_norm": "sequence", "ref_sync_every": 0},
    "tracerl": {"loss_norm": "sequence", "kl_to": "reference", "adv_std": "sample", "groups": "global", "mu": 4},
    "wd1": {"loss_norm": "sequence"},
    "spg": {"loss_norm": "sequence", "estimator": "block", "num_mc": 3},
}

# ---- paper ------------------------------------------------------------------------------------------
# "train": TrainConfig fields; "method": the method's config fields; "sources": where each value is from.
PAPER: dict[str, dict] = {
    "diffu-grpo": {
        "train": {"num_generations": 6},
        "method": {"mu": 12, "epsilon": 0.5, "beta": 0.04, "p_mask_prompt": 0.15, "loss_norm": "token",
                   "norm_rows": 6, "ref_sync_every": 64},
        "sources": "dllm-reasoning/d1 diffu-grpo/slurm_scripts/train.yaml (num_generations 6, "
                   "per_device_train_batch_size 6, num_iterations 12, epsilon 0.5, beta 0.04, p_mask_prompt "
                   "0.15, sync_ref_model True, ref_model_sync_steps 64); diffu_grpo_trainer.py compute_loss "
                   "(token mean over the micro-batch)",
    },
    "maskgrpo": {
        "train": {"num_generations": 6},
        "method": {"mu": 12, "epsilon": 0.2, "beta": 0.01, "gamma": 0.6, "loss_norm": "token", "norm_rows": 6,
                   "ref_sync_every": 64, "score_padding": True},
        "sources": "martian422/MaskGRPO scripts/train/t2t_grpo_train.sh (NUM_ITER 12, PER_DEVICE_BS 6 = "
                   "ROLLOUTS, MIN_MASK 0.6, --remasking arlike); configs/rl.yaml (epsilon 0.2, beta 0.01, "
                   "sync_ref_model True, ref_model_sync_steps 64); grpo/mask_grpo_trainer.py "
                   "(_get_per_token_logps_uni: t = min(min_mask_rate + (1 - min_mask_rate)(j+1)/12, 0.999); "
                   "completion_mask = perturb_mask; compute_loss: token mean; advantages /(std + 1e-5))",
    },
    "unigrpo": {
        "train": {"num_generations": 6},
        "method": {"mu": 12, "epsilon": 0.2, "beta": 0.01, "loss_norm": "token", "norm_rows": 6,
                   "ref_sync_every": 64},
        "sources": "MMaDA gives no mu/epsilon/beta; MaskGRPO's trainer runs its UniGRPO baseline "
                   "(configs/rl.yaml remasking random; t2t_grpo_train.sh batch 6, 12 iterations)",
    },
    "coupled-grpo": {
        "train": {"num_generations": 10},
        "method": {"mu": 2, "epsilon": 0.5, "beta": 0.01, "loss_norm": "token", "norm_rows": 5,
                   "ref_sync_every": 64},
        "sources": "apple/ml-diffucoder recipes/config_coupled_code.yaml (num_generations 10, num_iterations 2, "
                   "epsilon 0.5, beta 0.01, per_device_train_batch_size 5, sync_ref_model True, "
                   "ref_model_sync_steps 64); src/open_r1/coupled_grpo.py (leave-one-out, token mean)",
    },
    "tracerl": {
        "train": {"num_generations": 8},
        "method": {"mu": 1, "epsilon": 0.2, "beta": 0.01, "shrink": 8, "loss_norm": "example", "kl_to": "old",
                   "adv_std": "population", "groups": "row"},
        "sources": "Gen-Verse/dLLM-RL configs/rl_llada.yaml (num_response_per_task 8, shrink 8, eps 0.20, "
                   "beta 0.01, use_kl_estimator_k3, num_train_epochs 1, gradient_accumulation_steps 128 x "
                   "batch_size_lm 2); train/rl_llada.py (collapse_k_unique per row, forward_process: KL to "
                   "logp_old_tok); reward/rl_reward.py z_score_normalize (population std, no epsilon). "
                   "mu = 1: one pass over the batch's examples, all in one optimizer step (theirs: 256 "
                   "examples a step; ours has at most 8 x 8 rows x a few groups)",
    },
    "wd1": {
        "train": {"num_generations": 6},
        "method": {"mu": 12, "beta": 0.0, "psi": 1.0, "p_mask_prompt": 0.15, "loss_norm": "group_sum",
                   "norm_rows": 6},
        "sources": "xiaohangt/wd1 run/wll_NP_*.sh (NUM_ITER 12, --trainer_type wll_d1_neg); wd1/train.yaml "
                   "(num_generations 6, per_device_train_batch_size 6, p_mask_prompt 0.15); "
                   "wd1/trainers/rev_grpo_trainer.py compute_loss (softmax(A), sums over tokens and the "
                   "micro-batch, no KL term)",
    },
    "spg": {
        "train": {"num_generations": 6},
        "method": {"mu": 4, "beta": 0.0, "num_mc": 2, "eubo_beta": 1.5, "mix_weight": 0.5, "bound": "mix",
                   "p_mask_clean": 0.15, "estimator": "hidden", "loss_norm": "length", "norm_rows": 6},
        "sources": "facebookresearch/SPG spg/slurm_scripts/spg_mix/gsm_base_spg_mix_beta1.5_weight0.5.sbatch "
                   "(NUM_ITER 4, --num_t 2, --num_generations 6, --per_device_train_batch_size 6, --beta 0.0, "
                   "--logp_estimation mix, --mix_weight 0.5, --eubo_beta 1.5, forward_type block_random, "
                   "min_t 0, max_t 1); slurm_scripts/train.yaml (use_mask_prompt, p_mask_prompt 0.15); "
                   "spg/spg_trainer.py (forward_process, _get_per_seq_logps, compute_loss)",
    },
}


def check_recipe(recipe: str) -> str:
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose {' or '.join(RECIPES)}")
    return recipe


def recipe_settings(recipe: str, method: str, embedded: bool) -> tuple[dict, dict]:
    """(TrainConfig values, method-config values) the recipe sets for `method` (before --set overrides)."""
    check_recipe(recipe)
    if recipe == "paper":
        entry = PAPER.get(method)
        if entry is None:
            raise ValueError(f"no paper recipe for method {method!r}; known: {', '.join(sorted(PAPER))}")
        return dict(entry["train"]), dict(entry["method"])
    mo = dict(EQUAL_IMPLEMENTATION.get(method, {}))
    if embedded:
        mo.update(EQUAL_EMBEDDED_METHOD)
    return {}, mo
