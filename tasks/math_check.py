"""Mathematical equivalence checking that no answer can stall: cheap screens, then a pool of worker
processes with a hard per-answer deadline.

In RL the policy writes the answers the scorer parses, and some LaTeX costs sympy minutes or more
(`9^{9^{9^{9}}}` builds an integer of 370 million digits while holding the GIL; `(x+1)^{100000}` expands
a polynomial). So every equivalence check of the math task — rewards, `harness eval`, `harness score`,
from any thread — goes through `check_many` here:

1. **Screens** (`screen`), pure string checks that answer at once: too long, brackets nested too deeply,
   towers of exponents or an exponent beyond 10^4, a factorial of a large number or of a power, a sum or
   product with a bound beyond 10^4. A screened answer gets status `timeout` with reason `screen: ...`.
2. **Workers**: `tasks/math_worker.py`, started as plain scripts (`python tasks/math_worker.py`: they
   import only math-verify, never torch or the harness, and need no fork of the parent), talking JSON
   lines over pipes. Each answer has a deadline (`MDRL_MATH_DEADLINE_S`, default 0.5 s, or the task's
   `deadline_s`) counted in the worker's CPU time (read from /proc; wall time where /proc is missing),
   so that a busy machine does not change verdicts; a wall-clock backstop of max(20 x deadline,
   deadline + 10 s) bounds the wait either way (generous: at a load of ~15 on 2 cores a 0.5 s deadline
   with a 2.5 s backstop turned a gold answer into a timeout). A worker that passes it is killed and replaced; the answer
   gets status `timeout` (reason `deadline ...`) and counts as not equal. Workers are started lazily,
   in parallel, import and warm up before their first answer (start-up is not charged to it), and are
   shared by every thread of the process (`MDRL_MATH_WORKERS`, default min(4, CPU count)); they are
   stopped at exit (atexit) and killed by the kernel if the process dies first (Linux PDEATHSIG).

Statuses: `equal`, `not_equal`, `no_answer` (nothing extracted), `timeout`, `error` (math-verify raised,
or the worker died). Only `equal` counts as equal.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import re
import select
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

EQUAL, NOT_EQUAL, NO_ANSWER, TIMEOUT, ERROR = "equal", "not_equal", "no_answer", "timeout", "error"
STATUSES = (EQUAL, NOT_EQUAL, NO_ANSWER, TIMEOUT, ERROR)

ENV_DEADLINE, ENV_WORKERS = "MDRL_MATH_DEADLINE_S", "MDRL_MATH_WORKERS"
DEFAULT_DEADLINE_S = 0.5
START_TIMEOUT_S = 120.0  # importing sympy on a loaded machine; a setup failure, not an answer's fault
WORKER_PATH = Path(__file__).with_name("math_worker.py")

# screen limits: far beyond every MATH500 gold answer and every published LLaDA answer (see tests)
MAX_CHARS = 1000
MAX_DEPTH = 24  # nested brackets of any kind: { ( [
MAX_EXPONENT = 10_000  # a literal integer exponent, a factorial's argument, a sum's bound
MAX_TOWER = 2  # a^{b^{c}} has height 3


@dataclass(frozen=True)
class Check:
    status: str
    reason: str = ""  # why: the screen or deadline for `timeout`, the exception for `error`

    @property
    def equal(self) -> bool:
        return self.status == EQUAL


def deadline_from_env() -> float:
    """The per-answer deadline in seconds: `MDRL_MATH_DEADLINE_S`, else the default (0.5)."""
    raw = os.environ.get(ENV_DEADLINE, "").strip()
    if not raw:
        return DEFAULT_DEADLINE_S
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{ENV_DEADLINE}={raw!r} is not a number of seconds") from None
    if not (value > 0 and value < float("inf")):
        raise ValueError(f"{ENV_DEADLINE}={raw!r} must be a positive number of seconds")
    return value


def workers_from_env() -> int:
    raw = os.environ.get(ENV_WORKERS, "").strip()
    if not raw:
        return max(1, min(4, os.cpu_count() or 1))
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{ENV_WORKERS}={raw!r} must be a positive integer")
    return int(raw)


# ---- screens -------------------------------------------------------------------------------------------
_INT_RE = re.compile(r"\d+")
_BIG_OPERATOR_RE = re.compile(r"\\(?:sum|prod|lim|int|iint|iiint|oint)\b")


def _group(text: str, i: int) -> tuple[str, int]:
    """The argument starting at text[i] (after `^`, `_`, before `!`): a `{...}` group or one token.
    Returns (content, index after it)."""
    n = len(text)
    while i < n and text[i] == " ":
        i += 1
    if i >= n:
        return "", i
    if text[i] == "{":
        depth = 0
        for j in range(i, n):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    return text[i + 1:j], j + 1
        return text[i + 1:], n
    m = re.match(r"\d+|\\[A-Za-z]+|.", text[i:])
    return m.group(0), i + len(m.group(0))


def _big_literal(text: str) -> bool:
    """An integer literal beyond MAX_EXPONENT in `text` (thousands separators `1{,}000`/`1,000` joined)."""
    digits = re.sub(r"(?<=\d)(?:\{,\}|,|\\,|\\!)(?=\d{3})", "", text)
    return any(len(m) > 6 or int(m) > MAX_EXPONENT for m in _INT_RE.findall(digits))


def _exponent_height(text: str) -> int:
    """How many `^` levels nest in `text`: `x^2` is 1, `a^{b^{c}}` is 2, `9^{9^{9^{9}}}` is 3."""
    best, i = 0, 0
    while True:
        i = text.find("^", i)
        if i < 0:
            return best
        arg, end = _group(text, i + 1)
        best = max(best, 1 + _exponent_height(arg))
        i = end


def screen(text: str) -> str | None:
    """Why `text` is too costly to hand to sympy, or None. Pure string work, linear-ish in its length."""
    if len(text) > MAX_CHARS:
        return f"answer longer than {MAX_CHARS} characters ({len(text)})"
    depth = worst = 0
    for c in text:
        if c in "{([":
            depth += 1
            worst = max(worst, depth)
        elif c in "})]":
            depth -= 1
    if worst > MAX_DEPTH:
        return f"brackets nested {worst} deep (limit {MAX_DEPTH})"
    height = _exponent_height(text)
    if height > MAX_TOWER:
        return f"a tower of {height + 1} exponents"
    i = 0
    while (i := text.find("^", i)) >= 0:
        arg, i = _group(text, i + 1)
        if "^" in arg:  # a^{b^{c}}: the inner power must itself be small
            inner_base, _, inner_exp = arg.partition("^")
            b, e = _INT_RE.findall(inner_base), _INT_RE.findall(_group(inner_exp, 0)[0])
            if b and e and int(b[-1]) > 1 and len(e[0]) <= 6 and int(e[0]) * len(b[-1]) > 4:
                return f"an exponent of astronomical size ({arg})"
        if _big_literal(arg):
            return f"an exponent beyond {MAX_EXPONENT} ({arg[:40]})"
    for m in re.finditer(r"!", text):
        before = text[:m.start()].rstrip()
        if before.endswith("}"):  # {...}! or 10^{...}!
            depth, j = 0, len(before) - 1
            while j >= 0:
                depth += {"}": 1, "{": -1}.get(before[j], 0)
                if depth == 0:
                    break
                j -= 1
            operand = before[max(0, j - 40):]
        else:
            operand = re.search(r"[\w.]*$", before).group(0)
        if "^" in operand or _big_literal(operand):
            return f"a factorial of a large number ({operand[-40:]}!)"
    for m in _BIG_OPERATOR_RE.finditer(text):
        bounds, j = "", m.end()
        for _ in range(2):  # _{...} and ^{...}, in either order
            while j < len(text) and text[j] == " ":
                j += 1
            if j < len(text) and text[j] in "_^":
                arg, j = _group(text, j + 1)
                bounds += arg + " "
        if "^" in bounds or _big_literal(bounds):
            return f"{m.group(0)} with a bound beyond {MAX_EXPONENT} ({bounds.strip()[:40]})"
    return None


# ---- workers --------------------------------------------------------------------------------------------
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_cpu_seconds(pid: int) -> float | None:
    """user + system CPU time of a process from /proc (Linux); None where that is not available."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()
    try:
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK
    except (IndexError, ValueError):
        return None


class _Spawner:
    """Starts every worker from one long-lived thread: Linux's PDEATHSIG (set by each worker on itself)
    fires when the *thread* that started it ends, so workers must not be started by short-lived threads."""

    def __init__(self):
        self._requests: queue.Queue = queue.Queue()
        threading.Thread(target=self._serve, name="math-check-spawner", daemon=True).start()

    def _serve(self):
        while True:
            reply = self._requests.get()
            try:
                reply.put(subprocess.Popen(
                    [sys.executable, str(WORKER_PATH)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL, bufsize=0, close_fds=True,
                    env={**os.environ, "MDRL_MATH_WORKER_PARENT": str(os.getpid())}))
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                reply.put(e)

    def popen(self) -> subprocess.Popen:
        reply: queue.Queue = queue.Queue()
        self._requests.put(reply)
        got = reply.get()
        if isinstance(got, BaseException):
            raise got
        return got


class _Worker:
    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.fd = proc.stdout.fileno()
        self.buf = b""
        self.ready = False
        self.started = time.monotonic()
        self.cpu = 0.0  # CPU time the worker last reported
        self.sent = self.cpu_at_send = self.next_check = 0.0
        self.item: int | None = None

    def send(self, gold: str, pred: str, deadline: float) -> None:
        self.proc.stdin.write((json.dumps({"gold": gold, "pred": pred}) + "\n").encode())
        self.sent = time.monotonic()
        self.cpu_at_send = self.cpu
        self.next_check = self.sent + deadline

    def messages(self) -> list[dict] | None:
        """Complete lines available now; None on end of file (the worker died)."""
        data = os.read(self.fd, 1 << 16)
        if not data:
            return None
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignorable
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass

    def stop(self, grace: float) -> None:
        """Close its input (it exits after the answer in hand), then kill it if it has not."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        self.kill()


class MathPool:
    """Worker processes shared by every thread of this process. Use `check_many` (or the module's
    `check_many`, which uses one pool per process)."""

    def __init__(self, size: int | None = None):
        self.size = size or workers_from_env()
        self.pid = os.getpid()
        self._cond = threading.Condition(threading.RLock())
        self._idle: list[_Worker] = []
        self._alive: set[_Worker] = set()
        self._spawner = _Spawner()
        self._closed = False
        self.started = 0  # workers started, replacements included (for tests and reports)

    # -- worker bookkeeping (callers hold no lock while they talk to their workers) --
    def _new_worker(self) -> _Worker:
        w = _Worker(self._spawner.popen())
        with self._cond:
            self._alive.add(w)
            self.started += 1
        return w

    def _acquire(self, want: int) -> list[_Worker]:
        with self._cond:
            if self._closed:
                raise RuntimeError("the math checking pool has been shut down")
            while True:
                got = self._idle[:want]
                del self._idle[:want]
                starting = min(want - len(got), self.size - len(self._alive))
                if got or starting > 0:
                    # started under the lock (a Popen takes milliseconds) so threads cannot overshoot
                    return got + [self._new_worker() for _ in range(max(0, starting))]
                self._cond.wait()

    def _release(self, workers: list[_Worker]) -> None:
        with self._cond:
            for w in workers:
                if w.proc.poll() is None and w.item is None and not self._closed:
                    self._idle.append(w)
                else:
                    self._alive.discard(w)
                    w.kill()
            self._cond.notify_all()

    def _replace(self, w: _Worker) -> _Worker:
        w.kill()
        with self._cond:
            self._alive.discard(w)
        return self._new_worker()

    def shutdown(self, grace: float = 0.5) -> None:
        """Stop every worker (idle ones at once; the rest are killed)."""
        with self._cond:
            self._closed = True
            workers = list(self._alive)
            self._alive.clear()
            self._idle.clear()
            self._cond.notify_all()
        for w in workers:
            w.stop(grace if w.item is None else 0)

    def pids(self) -> list[int]:
        with self._cond:
            return [w.proc.pid for w in self._alive]

    # -- checking --
    def check_many(self, pairs: Sequence[tuple[str, str]], deadline_s: float) -> list[Check]:
        """Equivalence of (prediction, gold) pairs; every pair here has passed the screens."""
        results: list[Check | None] = [None] * len(pairs)
        todo = deque(range(len(pairs)))
        if not todo:
            return []
        backstop = max(20 * deadline_s, deadline_s + 10.0)  # wall time only guards a worker that stops using CPU
        workers = self._acquire(min(len(todo), self.size))
        try:
            while todo or any(w.item is not None for w in workers):
                now = time.monotonic()
                for w in workers:
                    if w.ready and w.item is None and todo:
                        i = todo.popleft()
                        try:
                            w.send(pairs[i][1], pairs[i][0], deadline_s)
                        except OSError:  # it died between answers: not this answer's fault
                            todo.appendleft(i)
                            workers[workers.index(w)] = self._replace(w)
                            continue
                        w.item = i
                waiting = [w for w in workers if not w.ready or w.item is not None]
                if not waiting:
                    continue
                wake = min((w.started + START_TIMEOUT_S) if not w.ready else w.next_check for w in waiting)
                readable, _, _ = select.select([w.fd for w in waiting], [], [], max(0.0, wake - now))
                for w in [w for w in waiting if w.fd in readable]:
                    msgs = w.messages()
                    if msgs is None:  # died: charge the answer in hand (if any), start another
                        if w.item is not None:
                            code = w.proc.poll()
                            results[w.item] = Check(ERROR, f"the checking process died (exit code {code})")
                            w.item = None
                        elif not w.ready:
                            w.kill()
                            raise RuntimeError(f"a math checking worker ({WORKER_PATH}) exited at start-up")
                        workers[workers.index(w)] = self._replace(w)
                        continue
                    for msg in msgs:
                        if "fatal" in msg:
                            w.kill()
                            raise RuntimeError(f"the math checking worker cannot start: {msg['fatal']}")
                        w.cpu = float(msg.get("cpu", w.cpu))
                        if msg.get("ready"):
                            w.ready = True
                        elif w.item is not None:
                            if "error" in msg:
                                results[w.item] = Check(ERROR, msg["error"])
                            else:
                                results[w.item] = Check(EQUAL if msg["eq"] else NOT_EQUAL)
                            w.item = None
                now = time.monotonic()
                for k, w in enumerate(workers):
                    if not w.ready and now - w.started > START_TIMEOUT_S:
                        raise RuntimeError(f"a math checking worker did not start within {START_TIMEOUT_S:.0f} s")
                    if w.item is None or now < w.next_check:
                        continue
                    cpu = _proc_cpu_seconds(w.proc.pid)
                    used = now - w.sent if cpu is None else cpu - w.cpu_at_send
                    if used >= deadline_s or now - w.sent >= backstop:
                        results[w.item] = Check(TIMEOUT, f"deadline {deadline_s:g} s")
                        w.item = None
                        workers[k] = self._replace(w)
                    else:  # waited on the machine, not on the answer: check again when it could be due
                        w.next_check = now + max(deadline_s - used, 0.01)
        finally:
            self._release(workers)
        return results  # type: ignore[return-value]


_POOL: MathPool | None = None
_POOL_LOCK = threading.Lock()


def get_pool() -> MathPool:
    """This process's pool (a forked child gets its own, never its parent's workers)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL.pid != os.getpid() or _POOL._closed:
            _POOL = MathPool()
        return _POOL


def shutdown() -> None:
    """Stop this process's workers (also run at exit)."""
    global _POOL
    with _POOL_LOCK:
        pool, _POOL = _POOL, None
    if pool is not None and pool.pid == os.getpid():
        pool.shutdown()


atexit.register(shutdown)


def check_many(pairs: Sequence[tuple[str | None, str]], deadline_s: float | None = None) -> list[Check]:
    """Equivalence of (prediction, gold) LaTeX pairs, each as the content of a `\\boxed{}`.

    Safe from any thread, never slower than the deadline per answer (plus the workers' start-up on
    first use). A prediction that is None or blank is `no_answer`.
    """
    deadline = deadline_from_env() if deadline_s is None else float(deadline_s)
    out: list[Check | None] = [None] * len(pairs)
    send: list[int] = []
    for i, (pred, gold) in enumerate(pairs):
        if pred is None or not str(pred).strip():
            out[i] = Check(NO_ANSWER)
            continue
        why = screen(str(pred)) or screen(str(gold))
        if why:
            out[i] = Check(TIMEOUT, f"screen: {why}")
        else:
            send.append(i)
    if send:
        got = get_pool().check_many([(str(pairs[i][0]), str(pairs[i][1])) for i in send], deadline)
        for i, c in zip(send, got):
            out[i] = c
    return out  # type: ignore[return-value]


def check(pred: str | None, gold: str, deadline_s: float | None = None) -> Check:
    return check_many([(pred, gold)], deadline_s)[0]
