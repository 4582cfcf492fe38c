"""`image-prompts`: a text-to-image prompt bundle loaded by path, scored by the image rewards.

    harness score --task image-prompts --data ../shared/data/image_prompts/geneval_metadata_long.jsonl \
        --predictions outputs/ --reward geneval=1.0,clip=0.2 --reward-model clip=/models/clip-vit-large-patch14 \
        --detector-path /models/mask2former-swin-small-coco-instance --clip-path /models/clip-vit-l-14

The bundles MaskGRPO's text-to-image RL and evaluation use (../shared/data/image_prompts/, see its README):
GenEval's prompts as long captions (`geneval_metadata_long.jsonl`: tag, prompt, include), DPG-Bench
(`dpg_bench.jsonl`: item_id, prompt), HPSv2 (`hpsv2_eval.jsonl`: tag, prompt) and ImageReward's benchmark
(`imagereward_benchmark_prompts.json`: id, prompt). Rows need `prompt`; a row with `include` carries GenEval
metadata (and must have one of GenEval's tags). The example id is the 0-based row (GenEval's output layout
numbers its folders so); the row's own `id` / `item_id` / `tag` are kept in `meta`.

Prompts have no reference images. Where a prompt carries GenEval metadata, GenEval's rules are the verifier
(the shapes world's exact detector for shapes-only metadata, else Mask2Former + CLIP colours from
`--detector-path`/`--clip-path`) and the metrics are GenEval's (`overall`, one per tag, over those prompts
only); elsewhere the verdict is None (no verifier). Every row records its raw (unweighted) reward values in
`extra["rewards"]`, and the metrics add their means as `reward_<name>` (the benchmark scores of DPG, HPSv2
and ImageReward prompts are reward-model scores). The default reward is `geneval`, which needs GenEval
metadata: for the other bundles choose model rewards (`--reward clip=1.0 --reward-model clip=PATH`).

Predictions: GenEval's output layout, `OUT/<row>/samples/<k>.png` (`metadata.jsonl` in each folder is
optional here). What works end to end without an image model of this kind: load, list, and score such a
folder (`harness score`); generating images for these prompts needs a text-to-image model (MMaDA through
`--model hf:...`, not verified here), the embedded tiny model draws only the shapes world.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tasks.base import TASKS, Check, DataError, Example, Scored
from tasks.geneval import GenevalTask
from tasks.geneval_rules import TAGS, summarize
from tasks.rewards import RewardError, RewardFn, per_item


@TASKS.register("image-prompts")
class ImagePromptsTask(GenevalTask):
    name = "image-prompts"
    kind = "image"
    primary_metric = "overall"
    default_data_hint = "../shared/data/image_prompts/dpg_bench.jsonl"
    fields = {"prompt": str}
    optional_fields = {"tag": str, "include": list, "exclude": list, "id": (str, int), "item_id": (str, int)}
    default_rewards = {"geneval": 1.0}
    records_raw_rewards = True

    def to_example(self, record: dict, index: int) -> Example:
        meta = {k: record[k] for k in ("id", "item_id", "tag") if k in record}
        if "include" not in record:
            return Example(id=index, prompt=record["prompt"], reference=None, meta=meta)
        if record.get("tag") not in TAGS:
            raise DataError(f"a row with GenEval metadata (include) needs one of GenEval's tags ({', '.join(TAGS)}), "
                            f"got {record.get('tag')!r}")
        return Example(id=index, prompt=record["prompt"], reference=record, meta=meta)

    def check(self, completion: Any, example: Example) -> Check:
        if example.reference is None:  # no GenEval metadata: no verifier
            return Check(None, None, extra={"tag": example.meta.get("tag")})
        return super().check(completion, example)

    def reward_functions(self) -> dict[str, RewardFn]:
        fns = super().reward_functions()
        fns["geneval"] = per_item("geneval", self._geneval, fns["geneval"].doc)
        return fns

    @staticmethod
    def _geneval(example: Example, completion: Any, check: Check) -> float:
        if example.reference is None:
            raise RewardError(f"the geneval reward needs GenEval metadata (include clauses); prompt {example.id} has "
                              "none: choose other rewards, e.g. --reward clip=1.0 --reward-model clip=PATH")
        return float(bool(check.verdict))

    def metrics(self, scored: Sequence[Scored], examples: Sequence[Example]) -> tuple[dict, dict]:
        from tasks.metrics import mean_with_ci

        tag = {str(ex.id): ex.reference["tag"] for ex in examples if ex.reference is not None}
        judged = [s for s in scored if str(s.id) in tag]
        metrics, ci = summarize([tag[str(s.id)] for s in judged], [s.verdict for s in judged]) if judged else ({}, {})
        names = list(dict.fromkeys(k for s in scored for k in s.extra.get("rewards", {})))
        for name in names:
            m, c = mean_with_ci([s.extra["rewards"][name] for s in scored if name in s.extra.get("rewards", {})])
            metrics[f"reward_{name}"], ci[f"reward_{name}"] = m, c
        return metrics, ci

    def predictions_from_folder(self, folder: str | Path) -> list[dict]:
        """GenEval's output layout, `<row>/samples/<k>.png` (metadata.jsonl optional): one row per image."""
        root = Path(folder)
        rows = [{"id": int(sub.name), "completion": str(p)}
                for sub in sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit())
                for p in sorted((sub / "samples").glob("*.png")) if p.stem.isdigit()]
        if not rows:
            raise DataError(f"no images under {root}: expected {root}/00000/samples/0000.png (one folder per "
                            "prompt, numbered by its 0-based row)")
        return rows
