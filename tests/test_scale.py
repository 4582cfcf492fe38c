"""Issue 19: LoRA, gradient checkpointing, exported policies, several processes, trackers, run decoder flags.

The fake TinyBert (tests/fakes.py) pins the mechanics in a second or two; the real LLaDA/Dream fixtures
(../shared/models, random weights, upstream code) pin LoRA targets, export and `hf:` loading. The
multi-process tests spawn processes over gloo on the CPU: one module fixture runs the 1- and 2-process
launches of the equivalence tests once for all seven methods (about 25 s on a loaded 2-core machine), the
torchrun CLI test another 20-40 s.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fakes import EXAMPLES, TINY, TinyBert

from harness.cli import main as cli_main
from harness.lora import (
    AdapterDisabled,
    LoraError,
    apply_lora,
    block_list,
    enable_gradient_checkpointing,
    is_peft,
    lora_dropout_active,
)
from tasks.base import TASKS
from trainers.loop import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT.parent / "shared" / "models"
DATA = ROOT.parent / "shared" / "data"
LLADA, DREAM = MODELS / "llada-tiny", MODELS / "dream-tiny"
needs_fixtures = pytest.mark.skipif(not (LLADA.is_dir() and DREAM.is_dir() and (DATA / "gsm8k_test.jsonl").is_file()),
                                    reason="the tiny LLaDA/Dream fixtures and GSM8K files live in ../shared")


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- entry points ------------------------------------------------------------------------------------------
def test_python_m_harness_is_the_cli():
    r = subprocess.run([sys.executable, "-m", "harness", "list", "methods"], capture_output=True, text=True,
                       env=_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    assert "maskgrpo" in r.stdout


# ---- LoRA on the fake model --------------------------------------------------------------------------------
def test_lora_trains_only_the_adapters_and_the_reference_is_the_base(one_thread, toy_task):
    model = TinyBert(seed=0)
    model.module.eval()
    before = copy.deepcopy(model.module)
    info = apply_lora(model, r=4, alpha=8)
    assert is_peft(model.module) and 0 < info["trainable_params"] < info["total_params"]
    names = {n for n, p in model.module.named_parameters() if p.requires_grad}
    assert names and all("lora_" in n for n in names)
    cfg = TrainConfig(**TINY, method_overrides={"mu": 2, "beta": 0.05})
    res = train(model, toy_task, "maskgrpo", EXAMPLES, cfg=cfg, seed=0, progress=False)
    assert res.curve[-1]["kl"] is not None  # the reference policy was used
    base_now = {n.replace("base_model.model.", "").replace(".base_layer", ""): p
                for n, p in model.module.named_parameters() if "lora_" not in n}
    for n, p in before.named_parameters():
        assert torch.equal(p, base_now[n]), n  # frozen weights untouched
    moved = [p for n, p in model.module.named_parameters() if "lora_B" in n]
    assert any(p.abs().max() > 0 for p in moved)  # the adapters trained (B starts at zero)
    ids = torch.tensor([[3, 4, 5, 1, 1, 1]])
    with torch.no_grad():
        ref = AdapterDisabled(model.module)(input_ids=ids).logits
        assert torch.equal(ref, before(input_ids=ids).logits)  # the reference: base, adapter disabled
        assert not torch.equal(model.module(input_ids=ids).logits, ref)


def test_lora_dropout_is_on_only_inside_the_gradient_forwards(one_thread):
    model = TinyBert(seed=0)
    model.module.eval()
    apply_lora(model, r=4, dropout=0.5)
    drops = [m for n, m in model.module.named_modules() if "lora_dropout" in n and isinstance(m, torch.nn.Dropout)]
    assert drops and not any(m.training for m in drops)
    with lora_dropout_active(model.module):
        assert all(m.training for m in drops)
    assert not any(m.training for m in drops)


def test_bad_lora_settings_are_one_line_errors():
    with pytest.raises(LoraError, match="must be >= 1"):
        apply_lora(TinyBert(seed=0), r=0)
    with pytest.raises(LoraError, match="module names of"):
        apply_lora(TinyBert(seed=0), r=2, targets="no_such_proj")


def test_gradient_checkpointing_gives_the_same_gradients_and_recomputes_blocks(one_thread):
    ids = torch.tensor([[3, 4, 5, 1, 1, 6], [7, 8, 1, 1, 9, 3]])

    def grads(checkpointed: bool):
        m = TinyBert(seed=0).module.eval()
        calls = []
        if checkpointed:
            assert enable_gradient_checkpointing(m) == 2
        # a layer inside the first block: the recomputation calls it again (the block's own hooks are not
        # re-run, since the checkpoint calls its forward function)
        next(block_list(m)[0].children()).register_forward_hook(lambda *a: calls.append(1))
        m(input_ids=ids).logits.square().mean().backward()
        return {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}, len(calls)

    plain, plain_calls = grads(False)
    ckpt, ckpt_calls = grads(True)
    assert plain.keys() == ckpt.keys()
    for n in plain:
        torch.testing.assert_close(ckpt[n], plain[n], rtol=1e-5, atol=1e-7)
    assert (plain_calls, ckpt_calls) == (1, 2)  # the block ran again in the backward pass


# ---- several processes: equivalence and sharded evaluation -------------------------------------------------
DIST_METHODS = ("maskgrpo", "diffu-grpo", "unigrpo", "coupled-grpo", "tracerl", "wd1", "spg")


@pytest.fixture(scope="module")
def one_and_two_processes(tmp_path_factory):
    """tests/dist_helper.py run as 1 process x 4 prompts per step and under torchrun as 2 processes x 2
    (gloo, CPU): a sharded evaluation, then 2 steps of each of the seven methods from the same weights and
    seeds. Both launches run at once (about 15 s and 25 s on a loaded 2-core machine)."""
    tmp = tmp_path_factory.mktemp("dist")
    helper = ROOT / "tests" / "dist_helper.py"
    one, two = tmp / "one.pt", tmp / "two.pt"
    procs = [subprocess.Popen([sys.executable, str(helper), str(one)], env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True),
             subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                               "--master_port", str(_free_port()), str(helper), str(two)], env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)]
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out[-3000:]
    return torch.load(one), torch.load(two)


def test_two_processes_give_the_evaluation_of_one(one_and_two_processes):
    """Sharded evaluation: each problem decoded once, the same completions and metrics as one process."""
    a, b = one_and_two_processes
    assert (a["world"], b["world"]) == (1, 2)
    assert b["completions"] == a["completions"] and b["ids"] == a["ids"] == [e.id for e in EXAMPLES]
    assert b["metrics"] == a["metrics"]


@pytest.mark.parametrize("method", DIST_METHODS)
def test_two_processes_train_the_weights_of_one(one_and_two_processes, method):
    """2 processes x 2 prompts per step vs 1 process x 4, 2 steps, mu = 2, units of 4 rows for the token
    means (unit 1 straddles the processes): the same rollouts and rewards exactly, and the same weights
    within 2e-6.

    Why 2e-6: the weights have scale ~1 (LayerNorm gains; the other weights ~0.03) and move by ~4e-3 in the
    4 AdamW updates (lr 1e-3). The only difference left is float32 summation order (two half-batch
    gradients averaged by DDP's all-reduce vs one full-batch backward, ~1e-7 relative). AdamW divides each
    gradient component by its own running RMS, so a component whose terms nearly cancel can carry that
    rounding into its step: measured max |w_1 - w_2| over the 21,440 weights was 0.7e-7 (unigrpo) to
    4.8e-7 (spg), 0-6 weights above 1e-7 per method. 2e-6 leaves a 4x margin, and is 1/2000 of the weights'
    movement: a row that draws other masks on 2 processes (the process index put back into the views
    seed) moved the weights apart by 5.3e-3 to 7.6e-3, per-process normalisers by 7.1e-3 to 7.9e-3."""
    a, b = (r["methods"][method] for r in one_and_two_processes)
    assert b["rewards"] == a["rewards"]  # rollouts are seeded per row: identical
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-7)
    init = TinyBert(seed=0).module.state_dict()
    moved = max((a["state"][k] - init[k]).abs().max().item() for k in init)
    diff = max((a["state"][k] - b["state"][k]).abs().max().item() for k in init)
    assert moved > 1e-3 and diff <= 2e-6, (moved, diff)


def _gold_run(tmp_path, launcher: list[str]) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "run"
    cmd = [*launcher, "-m", "harness", "run", "--task", "gsm8k", "--method", "none", "--model", "gold",
           "--data", str(DATA / "gsm8k_test.jsonl"), "--limit", "5", "--out", str(out), "--no-progress"]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600, cwd=tmp_path), out


@needs_fixtures
def test_torchrun_two_processes_write_one_result_with_the_world_size(tmp_path):
    r, out = _gold_run(tmp_path, [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                  "--master_port", str(_free_port())])
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1  # one summary, from the main process
    s = json.loads((out / "summary.json").read_text())
    assert s["processes"]["world_size"] == 2 and s["processes"]["eval_sharded"] is True
    assert s["n"] == 5 and s["final"]["accuracy"] == 1.0  # all 5 problems, each scored once
    assert len((out / "samples.jsonl").read_text().splitlines()) == 5


@needs_fixtures
def test_accelerate_launch_that_got_one_process_says_so(tmp_path):
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists():
        pytest.skip("accelerate's launcher is not installed next to this python")
    r, out = _gold_run(tmp_path, [str(accelerate), "launch", "--num_processes", "2", "--cpu"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "started only this one" in r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["processes"]["world_size"] == 1 and "started only this one" in s["processes"]["launch_warning"]


# ---- trackers --------------------------------------------------------------------------------------------
def _list_tracker():
    from accelerate.tracking import GeneralTracker

    class ListTracker(GeneralTracker):
        """accelerate's tracker interface, keeping what it is given in memory."""

        name, requires_logging_directory = "list", False

        def __init__(self):
            super().__init__()
            self.rows, self.config = [], None

        @property
        def tracker(self):
            return self.rows

        def store_init_configuration(self, values):
            self.config = dict(values)

        def log(self, values, step=None, **kwargs):
            self.rows.append((step, dict(values)))

    return ListTracker()


def test_trackers_receive_every_curve_row(one_thread, toy_task):
    from accelerate import Accelerator

    tracker = _list_tracker()
    acc = Accelerator(cpu=True, log_with=[tracker])
    acc.init_trackers("test")
    model = TinyBert(seed=0)
    cfg = TrainConfig(**TINY, method_overrides={"mu": 2})
    train(model, toy_task, "maskgrpo", EXAMPLES, cfg=cfg, seed=0, progress=False, accelerator=acc)
    assert [s for s, _ in tracker.rows] == [1, 2]
    assert {"reward", "loss", "grad_norm"} <= set(tracker.rows[0][1])


def test_a_tracker_that_is_not_installed_is_a_one_line_error(capsys):
    from accelerate.utils import is_tensorboard_available

    if is_tensorboard_available():
        pytest.skip("tensorboard is installed here")
    rc = cli_main(["run", "--task", "gsm8k", "--method", "none", "--model", "gold", "--report-to", "tensorboard"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "tensorboard" in err and "pip install" in err


# ---- run flags ---------------------------------------------------------------------------------------------
def test_run_takes_the_decoder_flags_of_eval(tmp_path, capsys):
    from harness.cli import build_parser
    from harness.run_spec import RunSpec

    args = build_parser().parse_args(["run", "--task", "gsm8k", "--method", "maskgrpo", "--gen-length", "32",
                                      "--block-length", "32", "--diffusion-steps", "16", "--lora-r", "8"])
    spec = RunSpec.from_args(args)
    assert spec.decode == {"gen_length": 32, "block_length": 32, "steps": 16} and spec.lora_r == 8
    spec.check()
    assert spec.record()["decode"] == spec.decode  # replayed by --config summary.json
    rc = cli_main(["run", "--task", "gsm8k", "--method", "none", "--gen-length", "30", "--block-length", "32"])
    err = capsys.readouterr().err
    assert rc == 2 and "block_length" in err and len(err.strip().splitlines()) == 1
    rc = cli_main(["run", "--task", "gsm8k", "--method", "none", "--lora-r", "4"])
    assert rc == 2 and "nothing to train" in capsys.readouterr().err


# ---- the real fixtures: LoRA targets, export, hf: loading --------------------------------------------------
@needs_fixtures
@pytest.mark.parametrize("which, expected", [
    ("llada", {"q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out"}),
    ("dream", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})])
def test_default_lora_targets_per_family(which, expected):
    from harness.models import load_model

    model = load_model(f"hf:{LLADA if which == 'llada' else DREAM}")
    apply_lora(model, r=2)
    wrapped = {n for n, m in model.module.named_modules() if hasattr(m, "lora_A")}
    assert {n.rsplit(".", 1)[-1] for n in wrapped} == expected
    assert all(".blocks." in n or ".layers." in n for n in wrapped)  # LLaDA's head (also ff_out) excluded
    assert len(wrapped) == 7 * 2  # 7 projections x 2 layers


def _acc_with(tracker):
    from accelerate import Accelerator

    return Accelerator(cpu=True, log_with=[tracker])


class _VariedReward:
    """gsm8k with a reward that varies with the text, so that random-weight models get mixed groups."""

    default_rewards = {"varied": 1.0}

    def reward_functions(self):
        from tasks.rewards import per_item

        return {**super().reward_functions(),
                "varied": per_item("varied", lambda ex, c, k: (sum(map(ord, c)) % 5) / 4, "text-dependent, 0..1")}


@pytest.fixture(scope="module")
def varied_task():
    from tasks.gsm8k import GSM8K

    if "gsm8k-varied" not in TASKS:
        TASKS.register("gsm8k-varied")(type("GSM8KVaried", (_VariedReward, GSM8K), {"name": "gsm8k-varied"}))
    return "gsm8k-varied"


def _run(tmp_path, name, model, *extra, steps=1):
    """A short maskgrpo run on 1 test problem: 2 prompts x 2 completions of 8 tokens, mu=1, lr 1e-2."""
    out = tmp_path / name
    rc = cli_main(["run", "--task", "gsm8k-varied", "--method", "maskgrpo", "--model", f"hf:{model}",
                   "--data", str(DATA / "gsm8k_test.jsonl"), "--train-data", str(DATA / "gsm8k_train.jsonl"),
                   "--steps", str(steps), "--limit", "1", *SHORT_SET, *SHORT_DECODE,
                   "--out", str(out), "--no-progress", *extra])
    assert rc == 0
    return out, json.loads((out / "summary.json").read_text())


SHORT_SET = [x for kv in ("gen_length=8", "block_length=8", "diffusion_steps=4", "prompts_per_step=2",
                          "num_generations=2", "mu=1", "lr=1e-2") for x in ("--set", kv)]
SHORT_DECODE = ["--gen-length", "8", "--block-length", "8", "--diffusion-steps", "4"]


def _eval_policy(tmp_path, run: Path, name: str) -> tuple[dict, list[str]]:
    out = tmp_path / name
    rc = cli_main(["eval", "--task", "gsm8k-varied", "--model", f"hf:{run / 'policy'}", "--data",
                   str(DATA / "gsm8k_test.jsonl"), "--limit", "1", *SHORT_DECODE, "--out", str(out)])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    return s["metrics"], [json.loads(x)["completion"] for x in (out / "samples.jsonl").read_text().splitlines()]


def _completions(folder: Path) -> list[str]:
    return [json.loads(x)["completion"] for x in (folder / "samples.jsonl").read_text().splitlines()]


@needs_fixtures
@pytest.mark.parametrize("which", ["dream", pytest.param("llada", marks=pytest.mark.slow)])
def test_lora_run_exports_an_adapter_that_reproduces_the_final_metrics(tmp_path, varied_task, which, monkeypatch):
    """Dream in the default suite; LLaDA, whose 126k-token head made the same run about twice as slow on a
    loaded 2-core CPU (37 s vs 20 s; 16 s when the machine was quieter), with `-m slow`."""
    from safetensors.torch import load_file

    import harness.experiment

    tracker = _list_tracker()  # --report-to's path, with an in-memory tracker (no tracker package needed)
    monkeypatch.setattr(harness.experiment, "make_accelerator",
                        lambda *a, **k: _acc_with(tracker))
    folder = LLADA if which == "llada" else DREAM
    run, s = _run(tmp_path, "lora", folder, "--lora-r", "4", "--lora-dropout", "0.05")
    assert tracker.config["lora_r"] == 4 and [st for st, _ in tracker.rows][-1] == 1
    assert "reward" in tracker.rows[-2][1] and "final_accuracy" in tracker.rows[-1][1]
    lora = s["scale"]["lora"]
    assert 0 < lora["trainable_params"] < lora["total_params"] / 5
    assert s["scale"]["policy"] == {"path": "policy", "kind": "adapter", "base": str(folder.resolve())}
    assert s["processes"]["world_size"] == 1 and s["processes"]["prompts_per_process"] == 2
    assert not (run / "policy" / "config.json").exists()  # an adapter, not a copy of the model
    weights = load_file(str(run / "policy" / "adapter_model.safetensors"))
    assert all("lora_" in k for k in weights)
    assert any(v.abs().max() > 0 for k, v in weights.items() if "lora_B" in k)  # it trained
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["model"] and all("lora_" in k for k in ckpt["model"])  # only adapter weights were trainable
    metrics, completions = _eval_policy(tmp_path, run, "eval")
    assert metrics == s["final"]
    assert completions == _completions(run)


@needs_fixtures
def test_full_run_exports_weights_tokenizer_and_code_that_transformers_loads(tmp_path, varied_task):
    import transformers

    run, s = _run(tmp_path, "full", DREAM)
    policy = run / "policy"
    assert s["scale"]["policy"]["kind"] == "full" and s["scale"]["lora"] is None
    assert {"config.json", "model.safetensors", "tokenizer.json", "modeling_dream.py",
            "configuration_dream.py", "harness_policy.json"} <= {p.name for p in policy.iterdir()}
    module = transformers.AutoModel.from_pretrained(str(policy), trust_remote_code=True)
    assert type(module).__name__ == "DreamModel"
    metrics, completions = _eval_policy(tmp_path, run, "eval")
    assert metrics == s["final"] and completions == _completions(run)


@needs_fixtures
def test_an_adapter_whose_base_is_gone_is_a_one_line_error(tmp_path, capsys):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path / "gone")}))
    rc = cli_main(["eval", "--task", "gsm8k", "--model", f"hf:{folder}", "--data", str(DATA / "gsm8k_test.jsonl"),
                   "--limit", "1", "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert rc == 2 and "not found" in err and len(err.strip().splitlines()) == 1


# ---- the GPU benchmark's CPU smoke mode --------------------------------------------------------------------
@needs_fixtures
def test_the_8b_lora_benchmark_runs_in_its_tiny_shape_mode():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "llada8b_lora_step.py"), "--tiny-shape",
                        "--generations", "2", "--mu", "1", "--gen-length", "8", "--diffusion-steps", "4"],
                       capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["shape"] == "tiny" and out["step_time_s"] > 0 and out["trainable_params"] > 0
    assert out["peak_memory_gb"] is not None


def test_shards_cover_every_problem_once_in_order():
    from harness.distributed import shard

    for n in range(0, 9):
        for world in (1, 2, 3, 4):
            parts = [shard(list(range(n)), i, world) for i in range(world)]
            assert [x for p in parts for x in p] == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_the_shipped_accelerate_configs_parse():
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {name: str(load_config_from_file(str(ROOT / "configs" / f"accelerate_{name}.yaml")).distributed_type)
             for name in ("ddp", "fsdp", "zero2")}
    assert kinds == {"ddp": "DistributedType.MULTI_GPU", "fsdp": "DistributedType.FSDP",
                     "zero2": "DistributedType.DEEPSPEED"}


def test_lora_initialisation_is_seeded_and_leaves_the_global_generator_alone():
    def a_matrices(seed):
        model = TinyBert(seed=0)
        state = torch.random.get_rng_state()
        apply_lora(model, r=4, seed=seed)
        assert torch.equal(state, torch.random.get_rng_state())
        return [p.detach().clone() for n, p in model.module.named_parameters() if "lora_A" in n]

    same, again, other = a_matrices(0), a_matrices(0), a_matrices(1)
    assert all(torch.equal(x, y) for x, y in zip(same, again))
    assert not all(torch.equal(x, y) for x, y in zip(same, other))


def test_bf16_autocast_covers_every_forward_of_the_adapter(one_thread):
    from harness.lora import autocast_dtype, use_autocast

    assert autocast_dtype("auto", "cpu") is None and autocast_dtype("no", "cuda") is None
    model = TinyBert(seed=0)
    model.module.eval()
    ids = torch.tensor([[3, 4, 5, 1, 1, 6]])
    plain = model.logits(ids)
    use_autocast(model, autocast_dtype("bf16", "cpu"))
    cast = model.logits(ids)
    assert plain.dtype == torch.float32 and cast.dtype == torch.bfloat16
    assert (cast.float() - plain).abs().max() < 0.1  # the same model, in bf16 matmuls
