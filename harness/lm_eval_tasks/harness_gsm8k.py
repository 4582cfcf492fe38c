"""Prompt and scoring of lm-eval's `gsm8k_harness` task: the harness's GSM8K task, unchanged."""

from __future__ import annotations

from tasks.gsm8k import GSM8K

_TASK = GSM8K()


def doc_to_text(doc: dict) -> str:
    return _TASK.format_prompt(_TASK.to_example(doc, 0))


def process_results(doc: dict, results: list[str]) -> dict:
    example = _TASK.to_example(doc, 0)
    completion = results[0]
    return {"accuracy": float(_TASK.verify(completion, example.reference)),
            "accuracy_flexible": float(_TASK.verify_flexible(completion, example.reference))}
