"""Math equivalence checking: the worker pool (tasks/math_check.py) against the former in-process scorer.

    python benchmarks/bench_math_check.py [--data ../shared/data] [--old-pathological]

Measures, in this process:
  * real answers: the MATH500 gold answers vs themselves, the worked solutions' boxes vs the answers, and
    the boxes of d1's published LLaDA-8B-Instruct generations vs the answers (1,500 checks): answers per
    second through the pool (first call, start-up included; then warm) and through the former
    in-process scorer (math-verify called in this thread with its own 5 s limit), and whether the
    verdicts agree;
  * the eight pathological answers of issue 24 from the main thread and from a worker thread
    (start-up of a fresh pool included); with --old-pathological, also the former scorer on them in
    the main thread (about 36 s).
Prints one JSON object. Timing depends on the machine and its load; the README quotes a measured run.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks import math_check  # noqa: E402
from tasks.extract import last_boxed  # noqa: E402

PATHOLOGICAL = [r"9^{9^{9^{9}}}", r"(x+1)^{100000}", r"10^{10^{100}}!", r"\int_0^{\infty} e^{-x^{99999}} dx",
                "(" * 3000 + "1" + ")" * 3000, r"\sum_{n=1}^{10^{12}} n^{n}", r"2^{2^{2^{2^{2^{2}}}}}",
                r"\frac{1}{0}"]


def in_process(pred: str | None, gold: str) -> bool:
    """The former scorer: math-verify in the calling (main) thread with its own 5 s limit."""
    from math_verify import parse, verify

    if pred is None or not pred.strip():
        return False
    g = parse(f"\\boxed{{{gold}}}", parsing_timeout=5)
    p = parse(f"\\boxed{{{pred}}}", parsing_timeout=5)
    return bool(g and p and verify(g, p, timeout_seconds=5))


def real_pairs(data: Path) -> list[tuple[str | None, str]]:
    rows = [json.loads(line) for line in (data / "math500_test.jsonl").read_text().splitlines()]
    by_q = {r["problem"]: r for r in rows}
    pairs = [(r["answer"], r["answer"]) for r in rows] + [(last_boxed(r["solution"]), r["answer"]) for r in rows]
    for f in sorted(glob.glob(str(data / "published_generations" / "d1_llada8b_instruct" / "math500_*.json"))):
        for g in json.loads(Path(f).read_text())["generations"]:
            pairs.append((last_boxed(g["generations"]), by_q[g["question"]]["answer"]))
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--old-pathological", action="store_true", help="also time the former scorer on the 8 answers")
    args = ap.parse_args()
    import logging

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # the former scorer's timeout messages
    out: dict = {"workers": math_check.workers_from_env(), "deadline_s": math_check.deadline_from_env(),
                 "cpu_count": os.cpu_count()}

    # the eight answers first, on a fresh pool (start-up included), from the main thread then a worker thread
    t0 = time.perf_counter()
    checks = math_check.check_many([(p, "1") for p in PATHOLOGICAL])
    out["pathological_main_thread_s"] = round(time.perf_counter() - t0, 3)
    out["pathological_statuses"] = [c.status for c in checks]
    math_check.shutdown()
    box: dict = {}
    th = threading.Thread(target=lambda: box.update(c=math_check.check_many([(p, "1") for p in PATHOLOGICAL])))
    t0 = time.perf_counter()
    th.start()
    th.join()
    out["pathological_worker_thread_s"] = round(time.perf_counter() - t0, 3)
    # and without the screens: every one reaches a worker and the deadline decides
    pool = math_check.get_pool()
    t0 = time.perf_counter()
    raw = pool.check_many([(p, "1") for p in PATHOLOGICAL], math_check.deadline_from_env())
    out["pathological_unscreened_s"] = round(time.perf_counter() - t0, 3)
    out["pathological_unscreened_statuses"] = [c.status for c in raw]
    if args.old_pathological:
        t0 = time.perf_counter()
        for p in PATHOLOGICAL:
            in_process(p, "1")
        out["pathological_old_in_process_s"] = round(time.perf_counter() - t0, 3)
    math_check.shutdown()

    pairs = real_pairs(Path(args.data))
    out["real_answers"] = len(pairs)
    t0 = time.perf_counter()
    cold = math_check.check_many(pairs)
    out["pool_first_call_s"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    warm = math_check.check_many(pairs)
    out["pool_warm_s"] = round(time.perf_counter() - t0, 3)
    in_process("1", "1")  # import and warm up, as the workers do, so that both are timed warm
    t0 = time.perf_counter()
    old = [in_process(p, g) for p, g in pairs]
    out["old_in_process_s"] = round(time.perf_counter() - t0, 3)
    out["pool_warm_answers_per_s"] = round(len(pairs) / out["pool_warm_s"], 1)
    out["old_answers_per_s"] = round(len(pairs) / out["old_in_process_s"], 1)
    out["verdicts_differ"] = sum(c.equal != o for c, o in zip(cold, old)) + sum(c.equal != o for c, o in zip(warm, old))
    out["statuses"] = {s: sum(c.status == s for c in warm) for s in math_check.STATUSES}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
