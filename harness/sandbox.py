"""Code runner: execute untrusted programs against trusted tests, out of process.

`run_tests(program, tests, setup=..., timeout=..., memory_mb=...) -> ExecResult` runs the program in
a fresh `python -I` child, in its own session, with a cleared environment, a fresh temporary working
directory, CPU/address-space rlimits, a wall-clock timeout, and kills its whole process group at
the end. One bool per test comes back over a private pipe, tagged with a per-run nonce.

(First cut; hardening follows.)
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

_RUNNER = r'''
import os, sys, resource
def _main():
    fd, nonce, cpu, mem = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    write, close, dumps = os.write, os.close, __import__("json").dumps
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    payload = __import__("json").loads(sys.stdin.read())
    ns = {"__name__": "__main__"}
    passed = []
    try:
        exec(compile(payload["setup"], "<setup>", "exec"), ns)
        exec(compile(payload["program"], "<program>", "exec"), ns)
        ok = True
    except BaseException:
        ok = False
    for t in payload["tests"]:
        if not ok:
            passed.append(False)
            continue
        try:
            exec(compile(t, "<test>", "exec"), ns)
            passed.append(True)
        except BaseException:
            passed.append(False)
    write(fd, (nonce + dumps(passed)).encode())
    close(fd)
_main()
'''


@dataclasses.dataclass
class ExecResult:
    status: str  # "ok" | "timeout" | "crashed" | "sandbox_error"
    passed: list[bool]
    error: str | None
    isolation: str
    duration_s: float


def run_tests(program: str, tests: list[str], *, setup: str = "", timeout: float = 10.0,
              memory_mb: int = 2048) -> ExecResult:
    start = time.monotonic()
    fail = [False] * len(tests)
    nonce = secrets.token_hex(16)
    workdir = tempfile.mkdtemp(prefix="harness-sbx-")
    r, w = os.pipe()
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
    cmd = [sys.executable, "-I", "-c", _RUNNER, str(w), nonce, str(max(1, int(timeout) + 1)),
           str(memory_mb * 2**20)]
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, cwd=workdir, env=env,
                                pass_fds=(w,), start_new_session=True)
    except OSError as e:
        os.close(r), os.close(w)
        shutil.rmtree(workdir, ignore_errors=True)
        return ExecResult("sandbox_error", fail, repr(e), "none", time.monotonic() - start)
    os.close(w)
    status, error = "ok", None
    try:
        proc.communicate(json.dumps({"program": program, "setup": setup, "tests": tests}).encode(),
                         timeout=timeout)
    except subprocess.TimeoutExpired:
        status, error = "timeout", f"wall-clock timeout after {timeout}s"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    data = b""
    os.set_blocking(r, False)
    try:
        while chunk := os.read(r, 65536):
            data += chunk
            if len(data) > 1 << 20:
                break
    except BlockingIOError:
        pass
    os.close(r)
    shutil.rmtree(workdir, ignore_errors=True)
    passed = fail
    if status == "ok":
        text = data.decode(errors="replace")
        if text.startswith(nonce):
            try:
                got = json.loads(text[len(nonce):])
                if isinstance(got, list) and len(got) == len(tests):
                    passed = [x is True for x in got]
            except ValueError:
                status, error = "crashed", "malformed result"
        else:
            status, error = "crashed", f"no result (exit code {proc.returncode})"
    return ExecResult(status, passed, error, "session+rlimits", time.monotonic() - start)


def run_many(jobs: list[dict], workers: int = 2) -> list[ExecResult]:
    """Run `run_tests(**job)` for each job with at most `workers` children at once, in order."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda job: run_tests(**job), jobs))
