"""lm-evaluation-harness integration: `--model harness`, its likelihood estimate, and the results layout."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval")

from harness.lm_eval_model import HarnessLM  # noqa: E402 - registers "harness"

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
LLADA, DREAM = SHARED / "models" / "llada-tiny", SHARED / "models" / "dream-tiny"
GSM8K = SHARED / "data" / "gsm8k_test.jsonl"
needs_fixtures = pytest.mark.skipif(not (LLADA.is_dir() and GSM8K.is_file()), reason="needs ../shared")


def local_task_dir(tmp_path: Path) -> Path:
    """The shipped gsm8k_harness config, pointed at the absolute path of the local GSM8K file."""
    folder = tmp_path / "lm_eval_tasks"
    folder.mkdir()
    src = ROOT / "harness" / "lm_eval_tasks"
    for f in src.iterdir():
        if f.suffix in (".yaml", ".py"):
            text = f.read_text()
            if f.suffix == ".yaml":
                assert "../shared/data/gsm8k_test.jsonl" in text
                text = text.replace("../shared/data/gsm8k_test.jsonl", str(GSM8K))
            (folder / f.name).write_text(text)
    return folder


@needs_fixtures
def test_lm_eval_generations_equal_harness_eval(tmp_path):
    """Same problems, same decoder settings: lm-eval's generations are `harness eval`'s, token for token."""
    from lm_eval.tasks import TaskManager

    from harness.cli import main

    decode = "gen_length=16,block_length=8,steps=8,temperature=0.7"  # sampling: the row seeds must agree too
    res = lm_eval.simple_evaluate(model="harness", model_args=f"pretrained={LLADA},{decode}",
                                  tasks=["gsm8k_harness"], task_manager=TaskManager(include_path=str(local_task_dir(tmp_path))),
                                  limit=3, apply_chat_template=True, log_samples=True)
    theirs = {s["doc_id"]: s["resps"][0][0] for s in res["samples"]["gsm8k_harness"]}
    assert set(theirs) == {0, 1, 2}
    code = main(["eval", "--task", "gsm8k", "--model", f"hf:{LLADA}", "--data", str(GSM8K), "--limit", "3",
                 "--gen-length", "16", "--block-length", "8", "--diffusion-steps", "8", "--temperature", "0.7",
                 "--out", str(tmp_path / "ours")])
    assert code == 0
    ours = {json.loads(line)["id"]: json.loads(line)["completion"]
            for line in (tmp_path / "ours" / "samples.jsonl").read_text().splitlines()}
    assert ours == theirs
    assert len(set(ours.values())) == 3  # not trivially equal (three different completions)
    assert res["results"]["gsm8k_harness"]["accuracy,none"] == 0.0  # random weights


@needs_fixtures
def test_lm_eval_command_line_runs_the_harness_model(tmp_path, capsys):
    from harness.cli import main

    code = main(["lm-eval", "--model", "harness", "--model_args",
                 f"pretrained={DREAM},gen_length=8,block_length=8,steps=4", "--tasks", "gsm8k_harness",
                 "--include_path", str(local_task_dir(tmp_path)), "--limit", "2",
                 "--output_path", str(tmp_path / "lm_out")])
    assert code == 0
    files = list((tmp_path / "lm_out").rglob("results_*.json"))
    assert len(files) == 1
    results = json.loads(files[0].read_text())["results"]["gsm8k_harness"]
    assert "accuracy,none" in results


def test_unknown_model_args_are_one_line_errors():
    with pytest.raises(ValueError, match="unknown model_args blocks"):
        HarnessLM(pretrained="tiny", tiny_task="arith", blocks=3)


class ConstantModel:
    """Every position gets the same distribution: log p = log_probs[token], whatever the input."""

    mask_id, pad_id = 0, 1
    device = torch.device("cpu")

    def __init__(self, log_probs: torch.Tensor):
        self.log_probs = log_probs
        self.calls = 0

    def logits(self, ids, attention_mask=None):
        self.calls += 1
        return self.log_probs.expand(*ids.shape, -1).clone()


def bare_lm(model, mc_num=8, mc_batch_size=4, cfg_scale=0.0) -> HarnessLM:
    from harness.sampling import DecodeConfig

    lm = HarnessLM.__new__(HarnessLM)
    lm.model, lm.mc_num, lm.mc_batch_size = model, mc_num, mc_batch_size
    lm.decode = DecodeConfig(cfg_scale=cfg_scale)
    return lm


def test_mc_loglikelihood_is_exact_when_every_token_has_the_same_probability():
    """Hand-worked: if every target token has probability q, a sample hiding l of T tokens scores
    l * (-log q) * T / l = -T log q, so every estimate is exactly T log q (here T = 5, q = 0.1)."""
    q = 0.1
    probs = torch.tensor([0.1, 0.1, q, q, q, q, q, q, 0.2])  # sums to 1; ids 2..7 all have probability q
    model = ConstantModel(probs.log())
    lm = bare_lm(model)
    est = lm._mc_loglikelihood(prefix=[8, 8, 8], target=[2, 3, 4, 5, 6], seed=0)
    assert est == pytest.approx(5 * math.log(q), rel=1e-6)
    assert model.calls == 8 // 4  # mc_num / mc_batch_size forwards


def test_mc_loglikelihood_averages_to_the_sum_of_token_log_probabilities():
    """Unequal probabilities: the estimator is unbiased, E = sum_i log p(y_i) (hand-worked target values:
    log 0.1 + log 0.2 + log 0.4 = -5.2983), so many samples land close to it."""
    probs = torch.tensor([0.1, 0.1, 0.1, 0.2, 0.4, 0.1])
    lm = bare_lm(ConstantModel(probs.log()), mc_num=4096, mc_batch_size=512)
    est = lm._mc_loglikelihood(prefix=[5], target=[2, 3, 4], seed=1)
    assert est == pytest.approx(math.log(0.1) + math.log(0.2) + math.log(0.4), abs=0.05)
    # deterministic given the seed
    assert est == lm._mc_loglikelihood(prefix=[5], target=[2, 3, 4], seed=1)


def test_is_greedy_holds_only_for_the_argmax_continuation():
    probs = torch.tensor([0.0, 0.0, 0.1, 0.7, 0.2]) + 1e-9  # argmax is id 3 everywhere
    lm = bare_lm(ConstantModel(probs.log()))
    lm.model.eos_id, lm.model.image_token_range = None, None
    assert lm._is_greedy([4, 4], [3, 3, 3]) is True
    assert lm._is_greedy([4, 4], [3, 2, 3]) is False


def test_harness_eval_writes_lm_evals_results_layout(tmp_path):
    from harness.cli import main

    data = SHARED / "data" / "math500_test.jsonl"
    if not (GSM8K.is_file() and data.is_file()):
        pytest.skip("needs ../shared/data")
    code = main(["eval", "--task", "gsm8k,math", "--model", "gold", "--data", f"gsm8k={GSM8K}",
                 "--data", f"math={data}", "--limit", "4", "--out", str(tmp_path / "both")])
    assert code == 0
    for task in ("gsm8k", "math"):
        summary = json.loads((tmp_path / "both" / task / "summary.json").read_text())
        layout = json.loads((tmp_path / "both" / task / "lm_eval_results.json").read_text())
        res = layout["results"][task]
        assert res["accuracy,none"] == summary["metrics"]["accuracy"] == 1.0
        assert res["accuracy_stderr,none"] == 0.0  # sqrt(p (1 - p) / (n - 1)) at p = 1
        assert layout["n-shot"][task] == 0 and layout["n-samples"][task]["effective"] == 4
        assert set(layout) >= {"results", "configs", "versions", "n-shot", "config"}
    both = json.loads((tmp_path / "both" / "lm_eval_results.json").read_text())
    assert set(both["results"]) == {"gsm8k", "math"}


def test_stderr_of_a_proportion_is_hand_worked():
    from harness.results import lm_eval_layout

    layout = lm_eval_layout([{"task": "t", "n": 8, "metrics": {"accuracy": 0.25, "score": 3.5}, "config": {}}])
    assert layout["results"]["t"]["accuracy_stderr,none"] == pytest.approx(math.sqrt(0.25 * 0.75 / 7))
    assert layout["results"]["t"]["score_stderr,none"] == "N/A"


def test_lm_eval_entry_turns_a_bad_model_folder_into_one_line(tmp_path, capsys):
    from harness.cli import main

    code = main(["lm-eval", "run", "--model", "harness", "--model_args", f"pretrained={tmp_path / 'nothing'}",
                 "--tasks", "gsm8k_harness", "--include_path", str(ROOT / "harness" / "lm_eval_tasks"),
                 "--limit", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("harness lm-eval: error: model folder not found")
