"""One equivalence-checking worker process for the math task (started by `tasks/math_check.py`).

Run as a script by file path (`python tasks/math_worker.py`), never imported as part of the `tasks`
package, so that a worker imports `math_verify` (and through it sympy) and nothing else: no torch, no
harness. It talks JSON lines:

    parent -> worker   {"gold": "<latex>", "pred": "<latex>"}
    worker -> parent   {"ready": true, "cpu": <s>}            once, after importing and warming up
                       {"eq": true|false, "cpu": <s>}          one line per request, in order
                       {"error": "<Type: message>", "cpu": <s>} when math-verify raised

`cpu` is this process's CPU time so far (`time.process_time()`), which the parent uses to charge each
answer only the CPU time it cost. The worker never times itself out: the parent kills it when an
answer passes the deadline and starts another. Both sides are parsed as the content of a `\\boxed{}`
(math-verify's LaTeX extraction reads them that way), exactly as the in-process scorer did before.
"""

import json
import os
import sys
import time


def set_parent_death_signal() -> None:
    """Ask Linux to SIGKILL this process when the thread that started it ends (no-op elsewhere), so a
    worker busy on a pathological answer cannot outlive a parent that was killed."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    parent = os.environ.get("MDRL_MATH_WORKER_PARENT", "")
    if parent.isdigit() and os.getppid() != int(parent):  # the parent died before the signal was armed
        os._exit(0)


def check(gold_text: str, pred_text: str) -> bool:
    from math_verify import parse, verify

    # no math-verify timeouts: they rely on signal.alarm; the parent's deadline is the guard
    gold = parse(f"\\boxed{{{gold_text}}}", parsing_timeout=None)
    pred = parse(f"\\boxed{{{pred_text}}}", parsing_timeout=None)
    if not gold or not pred:
        return False
    return bool(verify(gold, pred, timeout_seconds=None))


def main() -> None:
    if sys.path and sys.path[0].endswith("tasks"):  # the script's folder must not shadow installed modules
        sys.path.pop(0)
    set_parent_death_signal()
    out = sys.stdout
    try:
        check("\\frac{1}{2}", "0.5")  # imports and warms up sympy/antlr before the first timed answer
        check("(1, 2)", "\\{1, 2\\}")
    except Exception as e:  # e.g. math-verify not installed: the parent reports it
        out.write(json.dumps({"fatal": f"{type(e).__name__}: {e}"}) + "\n")
        out.flush()
        return
    out.write(json.dumps({"ready": True, "cpu": time.process_time()}) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            reply = {"eq": check(req["gold"], req["pred"])}
        except Exception as e:  # noqa: BLE001 - any failure of the checker is reported, never fatal
            reply = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
        reply["cpu"] = time.process_time()
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
