"""The fast-decoding flags of `harness eval` / `harness run` (--threshold, --factor, --cache) and of lm-eval's
`model_args`: they reach the decoder, are recorded and replayed, and a cache the model cannot run is refused up
front (issue 20).

The `tiny` model here is a randomly initialised one-layer RoFormer (the tiny model's class) with the arith
tokenizer, put where `harness pretrain` would cache it (a tmp HARNESS_HOME), so nothing is pretrained; evaluations
are 6 arith problems in-process on CPU (a few seconds in all, most of it building the tokenizer once).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fakes import write_random_roformer

from harness import models
from harness.cli import main
from harness.kv_cache import CacheUnsupported, RoFormerCachedForward
from harness.models import check_cache_model
from harness.run_spec import RunSpec
from harness.sampling import DecodeConfig
from tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 6  # arith problems per evaluation (one batch)
# arith's decoder: gen_length 32, block_length 16, steps 16 -> 2 blocks of 8 steps
ARITH = get_task("arith").gen_defaults


@pytest.fixture(scope="module")
def random_rf(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("rf") / "model"
    write_random_roformer(folder)
    return folder


@pytest.fixture
def tiny_home(random_rf, tmp_path, monkeypatch) -> Path:
    """HARNESS_HOME holding the random RoFormer as arith's `tiny` model (so `--model tiny` never pretrains)."""
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    target = models.tiny_model_path("arith")
    shutil.copytree(random_rf, target)
    assert models.is_pretrained("arith")
    return target


@pytest.fixture
def llada_folder(tmp_path) -> Path:
    """What the loader would read first of an hf: LLaDA checkpoint: a config.json naming its model_type (no
    weights, no code: a check that loaded it would fail with another error than the one asserted)."""
    folder = tmp_path / "llada"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llada", "architectures": ["LLaDAModelLM"]}))
    return folder


def eval_summary(out: Path, *flags, capsys) -> dict:
    argv = ["eval", "--task", "arith", "--model", "tiny", "--limit", LIMIT, "--device", "cpu", "--out", out, *flags]
    assert main([str(a) for a in argv]) == 0
    capsys.readouterr()
    return json.loads((out / "summary.json").read_text())


def completions(out: Path) -> list[str]:
    return [json.loads(line)["completion"] for line in (out / "samples.jsonl").read_text().splitlines()]


def one_line_error(argv, capsys) -> str:
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# ---- the flags reach the decoder and are recorded ------------------------------------------------------------
@pytest.mark.parametrize("flags,decode", [
    # a threshold below every argmax probability (the random model's are near 1/184): each block in one call
    (["--threshold", "0.001"], {"threshold": 0.001, "factor": None, "cache": "none"}),
    # factor rule: (n+1)(1 - c_(n)) <= 17 for every n <= 16 positions, so 1000 commits the whole block at once
    (["--factor", "1000"], {"threshold": None, "factor": 1000.0, "cache": "none"}),
])
def test_parallel_decoding_flags_cut_the_model_calls_and_are_recorded(flags, decode, tiny_home, tmp_path, capsys):
    plain = eval_summary(tmp_path / "plain", capsys=capsys)
    fast = eval_summary(tmp_path / "fast", *flags, capsys=capsys)
    # one batch of 6 problems: 16 fixed steps, against one call per block (32 / 16 = 2 blocks)
    assert plain["nfe"] == ARITH["steps"] == 16
    assert fast["nfe"] == ARITH["gen_length"] // ARITH["block_length"] == 2
    assert {k: fast["decode"][k] for k in decode} == decode
    assert {k: plain["decode"][k] for k in decode} == {"threshold": None, "factor": None, "cache": "none"}
    layout = json.loads((tmp_path / "fast" / "lm_eval_results.json").read_text())
    assert layout["configs"]["arith"]["generation_kwargs"]["threshold" if "--threshold" in flags else "factor"] \
        == decode["threshold" if "--threshold" in flags else "factor"]


def test_cache_flag_runs_the_cached_forward_and_is_recorded(tiny_home, tmp_path, capsys, monkeypatch):
    calls = []
    real = RoFormerCachedForward.__call__

    def spy(self, ids, keep, start=0, kv=None, rows=None):
        calls.append((ids.shape[1], kv is None))
        return real(self, ids, keep, start, kv, rows)

    monkeypatch.setattr(RoFormerCachedForward, "__call__", spy)
    s = eval_summary(tmp_path / "dual", "--cache", "dual", capsys=capsys)
    assert s["decode"]["cache"] == "dual" and s["nfe"] == 16
    # per block: one full refresh forward, then 7 forwards of the 16-token block alone (dual)
    full = [c for c in calls if c[1]]
    assert len(full) == 2 and all(w == 16 for w, fresh in calls if not fresh) and len(calls) == 16


def test_dual_cache_with_a_block_per_call_gives_the_uncached_completions(tiny_home, tmp_path, capsys):
    """Documented: the cache is refreshed by a full forward at each block's first step. When every block is
    decoded in that first step (a threshold below every probability), no step reads stale keys/values, so
    the completions are the uncached decoder's (the cached forward reproduces the module's logits)."""
    a = eval_summary(tmp_path / "a", "--threshold", "0.001", capsys=capsys)
    b = eval_summary(tmp_path / "b", "--threshold", "0.001", "--cache", "dual", capsys=capsys)
    assert completions(tmp_path / "a") == completions(tmp_path / "b")
    assert a["nfe"] == b["nfe"] == 2 and b["decode"]["cache"] == "dual"


# ---- a cache the model cannot run: one line, exit 2, before any model work ----------------------------------
@pytest.mark.parametrize("model", ["{llada}", "llada-8b-instruct", "hf:GSAI-ML/LLaDA-8B-Instruct"])
def test_eval_cache_with_a_model_the_harness_does_not_control_is_refused_up_front(model, llada_folder, tmp_path,
                                                                                  capsys):
    model = model.format(llada=f"hf:{llada_folder}")
    # the data file does not exist: the cache check must come before the data, the out folder and the model
    err = one_line_error(["eval", "--task", "gsm8k", "--model", model, "--data", tmp_path / "none.jsonl",
                          "--cache", "dual", "--out", tmp_path / "o"], capsys)
    assert err.startswith("harness eval: error: --cache dual: the KV cache needs a model whose code the harness "
                          "controls (tiny)")
    assert "use --cache none" in err and not (tmp_path / "o").exists()


def test_run_eval_cache_with_an_hf_llada_is_refused_before_anything_runs(llada_folder, tmp_path, capsys):
    err = one_line_error(["run", "--task", "gsm8k", "--method", "none", "--model", f"hf:{llada_folder}",
                          "--cache", "prefix", "--out", tmp_path / "o"], capsys)
    assert "--cache prefix: the KV cache needs" in err and "llada model" in err and "use --cache none" in err
    assert not (tmp_path / "o").exists()


def test_run_rollout_cache_with_an_hf_llada_is_refused_before_training(llada_folder, tmp_path, capsys):
    err = one_line_error(["run", "--task", "gsm8k", "--method", "maskgrpo", "--model", f"hf:{llada_folder}",
                          "--set", "rollout_cache=dual", "--out", tmp_path / "o"], capsys)
    assert "--set rollout_cache=dual: the KV cache needs a model whose code the harness controls" in err
    assert "use --set rollout_cache=none (rollout_threshold/rollout_factor" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flags,needle", [
    (["--set", "rollout_cache=dual"], "--set rollout_cache=dual"),
    (["--cache", "dual"], "--cache dual"),
])
def test_cache_with_lora_is_refused_up_front(flags, needle, tiny_home, tmp_path, capsys):
    err = one_line_error(["run", "--task", "arith", "--method", "maskgrpo", "--model", "tiny", "--lora-r", "4",
                          *flags, "--out", tmp_path / "o"], capsys)
    assert needle in err and "--lora-r" in err and "none" in err


@pytest.mark.parametrize("setting,needle", [
    ("rollout_cache=bogus", "unknown cache 'bogus'; choose one of none, prefix, dual"),
    ("rollout_threshold=2", "threshold=2 must lie in (0, 1]"),
    ("rollout_factor=-1", "factor=-1 must be a finite number > 0"),
    ("lr=fast", "training settings (--set)"),
])
def test_bad_rollout_settings_fail_before_the_base_evaluation(setting, needle, tiny_home, tmp_path, capsys):
    err = one_line_error(["run", "--task", "arith", "--method", "maskgrpo", "--model", "tiny", "--set", setting,
                          "--out", tmp_path / "o"], capsys)
    assert needle in err and not (tmp_path / "o").exists()


def test_lm_eval_cache_with_an_hf_llada_is_refused_before_loading(llada_folder, capsys):
    pytest.importorskip("lm_eval")
    code = main(["lm-eval", "run", "--model", "harness", "--model_args", f"pretrained={llada_folder},cache=dual",
                 "--tasks", "gsm8k_harness", "--include_path", str(ROOT / "harness" / "lm_eval_tasks"), "--limit", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("harness lm-eval: error: cache=dual: the KV cache needs")
    assert "use cache=none (threshold/factor" in err[-1]


def test_lm_eval_model_args_take_the_fast_settings(tiny_home):
    pytest.importorskip("lm_eval")
    from harness.lm_eval_model import HarnessLM, model_args_for

    lm = HarnessLM(pretrained="tiny", tiny_task="arith", threshold=0.9, cache="dual", device="cpu")
    assert (lm.decode.threshold, lm.decode.factor, lm.decode.cache) == (0.9, None, "dual")
    off = HarnessLM(pretrained="tiny", tiny_task="arith", threshold=None, cache=None, device="cpu")  # `none`
    assert (off.decode.threshold, off.decode.cache) == (None, "none")
    assert "threshold=0.9" in model_args_for(lm.decode) and "cache=dual" in model_args_for(lm.decode)


def test_check_cache_model_accepts_only_models_whose_code_the_harness_controls(random_rf, llada_folder, tmp_path):
    for ok in ("tiny", "gold", f"hf:{random_rf}", f"hf:{tmp_path / 'missing' / 'folder'}"):
        check_cache_model(ok, "dual")  # a missing folder is left to the loader's "not found"
    for any_model in ("llada-8b-instruct", f"hf:{llada_folder}"):
        check_cache_model(any_model, "none")
        check_cache_model(any_model, None)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    for bad, why in ((f"hf:{llada_folder}", "is a llada model"), ("dream-7b-instruct", "is a hub model"),
                     ("hf:some-org/some-model", "is a hub model"), (f"hf:{adapter}", "is a LoRA adapter folder")):
        with pytest.raises(CacheUnsupported, match=why):
            check_cache_model(bad, "prefix")
    with pytest.raises(CacheUnsupported, match="--lora-r"):
        check_cache_model("tiny", "prefix", lora=True)
    shared = ROOT.parent / "shared" / "models"  # the real upstream fixtures, when this machine has them
    for name, family in (("llada-tiny", "llada"), ("dream-tiny", "Dream")):
        if (shared / name).is_dir():
            with pytest.raises(CacheUnsupported, match=f"is a {family} model"):
                check_cache_model(f"hf:{shared / name}", "dual")


# ---- replay -------------------------------------------------------------------------------------------------
def test_run_records_the_fast_settings_and_replays_them(tiny_home, tmp_path, capsys):
    argv = ["run", "--task", "arith", "--method", "none", "--model", "tiny", "--limit", LIMIT, "--device", "cpu",
            "--threshold", "0.001", "--cache", "dual", "--no-progress"]
    assert main([str(a) for a in [*argv, "--out", tmp_path / "a"]]) == 0
    a = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert a["run_spec"]["decode"] == {"threshold": 0.001, "cache": "dual"}
    assert (a["decode"]["threshold"], a["decode"]["factor"], a["decode"]["cache"]) == (0.001, None, "dual")
    assert a["eval_nfe"] == 2
    assert main(["run", "--config", str(tmp_path / "a" / "summary.json"), "--out", str(tmp_path / "b"),
                 "--device", "cpu", "--no-progress"]) == 0
    capsys.readouterr()
    b = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert b["decode"] == a["decode"] and b["run_spec"] == a["run_spec"] and b["eval_nfe"] == 2
    assert completions(tmp_path / "a") == completions(tmp_path / "b")


def test_summaries_written_before_the_fast_flags_replay_with_them_off(tmp_path):
    committed = sorted((ROOT / "results").glob("*/summary.json"))
    old = [p for p in committed if json.loads(p.read_text()).get("kind") == "run"]
    assert old, "no committed run results to replay"
    for path in old[:5]:
        spec = RunSpec.from_file(path)
        assert not {"threshold", "factor", "cache"} & set(spec.decode)
        d = DecodeConfig.from_task(get_task(spec.task), **spec.decode)
        assert (d.threshold, d.factor, d.cache, d.fast) == (None, None, "none", False)
    # a summary from before run specs were recorded: its `config` block alone
    legacy = tmp_path / "legacy.json"
    legacy.write_text(json.dumps({"schema_version": 1, "kind": "run",
                                  "config": {"task": "arith", "model": "tiny", "method": "maskgrpo", "seed": 1}}))
    spec = RunSpec.from_file(legacy)
    assert spec.decode == {} and DecodeConfig.from_task(get_task("arith"), **spec.decode).cache == "none"
    spec.check()  # and it passes the up-front checks, rollout settings included
