"""Code runner: score untrusted programs against trusted tests, out of process and contained.

    run_tests(program, tests, *, setup="", timeout=10.0, memory_mb=2048) -> ExecResult
    run_many(jobs, workers=None) -> list[ExecResult]          # bounded parallel pool, job order kept

In RL for code the policy writes the programs and, over thousands of steps, finds every hole in the
verifier. So the program never sees the tests, and no test ever sees one of the program's objects.

Two processes run per call, both forked from one runner (`python -I -S`, with site-packages on its path
but no .pth hooks run) started in a new session:

* P, the *program process*, runs `setup` and `program` and then only answers calls: "call f with these
  arguments". It is forked before the tests are read, so the tests and expected values are never in its
  memory; it has no handle on the result channel; its stdin/stdout/stderr are /dev/null (all program
  output is dropped, so a flood costs nothing; error texts are cut at 500 characters).
* T, the *test process*, runs `setup` and then each test statement exactly as written (an MBPP
  `assert f(1) == 2`, or HumanEval's `def check(candidate): ...` + `check(f)`). Each program-defined
  callable is, in T, a proxy that sends the arguments to P and gets back a *value*: P serialises the
  return value with a strict encoder (exact built-in types, recursively; a subclass of a built-in
  becomes its plain value; an iterator is materialised into a plain one; any other object becomes an
  opaque token that equals only itself and keeps only its truth value), and T decodes JSON into plain
  built-ins only. So every comparison in a test is between plain values, in T, with T's own builtins.
  Program names never shadow `setup` names in T, and shadow a builtin only where no test calls that
  name on a program value (MBPP's own `def sum(a, b)` works; a program `abs`, `set` or `isclose`
  cannot rig `assert abs(f(x) - y) < 1e-9`). A test passes iff its statement raises nothing.
* Results are streamed by T as JSON lines tagged with a per-run nonce on a pipe only T holds; exit
  codes and printed text are ignored. A program that raises (or calls `sys.exit`) while loading fails
  every test, as it would natively. Only a frame P sends before any untrusted code runs can report a
  harness fault ("sandbox_error"), so a program cannot make itself unscorable instead of wrong.

Containment, applied by the runner and reported in `ExecResult.isolation` (tags joined by "+"):

* `netns,pidns,mountns,ipcns,utsns` - new Linux namespaces (unshare(2); with a user namespace when not
  root). No network (loopback only, down). In the PID namespace T is init: when it exits the kernel
  kills every process left, including ones that double-forked, called setsid or ignore signals.
* `uid-split` - (root only) P and T drop to two fresh, unused uids, so P cannot signal, ptrace or read
  the memory of T, the runner or the harness, and can write nothing owned by anyone else.
* `ro-fs` - every mount is remounted read-only in the private mount namespace.
* `hidden-dirs` - home, working directory, repository, caches, /tmp, /mnt... are covered by empty
  tmpfs (the interpreter's own prefix is bound back read-only), so answer files cannot be read.
* `private-tmp` - a fresh tmpfs of `DISK_MB` on /tmp holds the working directory, the only place P can
  write; it vanishes with the mount namespace (a host directory from mkdtemp is used when there is no
  mount namespace). /dev/shm, /var/tmp and /run/lock are empty and read-only (no multiprocessing).
* `private-proc` - /proc of the new PID namespace, hidepid=2: P sees only its own processes.
* `cgroup(memory,pids,cpu)` - a per-run cgroup (v1) caps total memory (all processes and the tmpfs),
  the number of tasks and CPU (one core), and is used to kill everything at the end.
* `rlimits` - CPU seconds, address space (`memory_mb`), file size, open files, processes, no core.
  `no_new_privs` is set, and every process is SIGKILLed when its parent dies.
* Always: cleared environment, wall-clock timeout, killing the runner's process group. Without a PID
  namespace leftovers are found by scanning /proc for P's uid (root) - not otherwise.

Residual risks (honest list):
* No seccomp filter: the kernel's whole syscall surface is exposed (P can e.g. create nested user
  namespaces, whose mounts stay locked); a kernel exploit escapes everything.
* Without root there is no uid split, so P could signal or ptrace T and tamper with the verdict
  (namespaces still contain it); without user namespaces either, only rlimits, sessions and timeouts
  apply. Non-Linux systems get rlimits and timeouts only.
* Hidden directories are a fixed list plus the caller's cwd, home and repository: an answer file on
  another world-readable path stays readable.
* Fidelity: tests that need the program's objects themselves (attributes of a returned instance,
  in-place mutation of an argument, a trusted-setup object passed to the program) fail; so does a test
  that calls a builtin-named program function on another program value. numpy values come back as
  plain values via `tolist()`; other non-plain values (Decimal, Fraction) compare by identity only.
* A CPU-heavy honest program is slowed by the one-core cgroup quota, and P and T share the timeout.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import math
import os
import secrets
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import time

DISK_MB = 64  # size of the private /tmp (working directory included)
MAX_PROCS = 64  # processes/threads P may own (RLIMIT_NPROC per fresh uid, cgroup pids.max + a margin)
FILE_MB = 16  # largest file P may write (RLIMIT_FSIZE)
UID_BASE = 1_500_000_000  # fresh uids are drawn from [UID_BASE, UID_BASE + 2**29)

# The runner. Parent -> runner stdin: frame 1 (config, program, setup), frame 2 (tests); each frame is a
# 4-byte big-endian length + JSON. T -> parent stdout: lines "<nonce> <json>".
_RUNNER = r'''
import builtins, ctypes, json, os, resource, signal, sys, types

LIBC = ctypes.CDLL(None, use_errno=True)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 8, 32, 4096, 16384
MS_PRIVATE = 1 << 18
MOUNT_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": 1024,
               "nodiratime": 2048, "relatime": 1 << 21}
NEWNS, NEWUTS, NEWIPC = 0x20000, 0x4000000, 0x8000000
NEWUSER, NEWPID, NEWNET = 0x10000000, 0x20000000, 0x40000000
MAX_MSG = 16 << 20
SCALARS = (type(None), bool, int, float, str)
TRUTHS = (bool, type(None))


def libc_call(name, *args):
    if getattr(LIBC, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), name)


def mount(src, dst, fstype, flags, data=None):
    b = lambda s: None if s is None else s.encode()
    libc_call("mount", b(src), b(dst), b(fstype), ctypes.c_ulong(flags), b(data))


def prctl(option, value):
    libc_call("prctl", option, ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))


def read_exact(fd, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError("pipe closed")
        buf += chunk
    return bytes(buf)


def recv(fd):
    n = int.from_bytes(read_exact(fd, 4), "big")
    if n > MAX_MSG:
        raise ValueError("message too large")
    return json.loads(read_exact(fd, n))


def send(fd, obj):
    data = json.dumps(obj, separators=(",", ":")).encode()
    if len(data) > MAX_MSG:
        raise ValueError("value too large")
    data = len(data).to_bytes(4, "big") + data
    while data:
        data = data[os.write(fd, data):]


# ---- values: strict encoder (P's results, T's arguments) and strict decoder --------------------------
def _iter_types():
    d = {}
    return {type(x) for x in (iter([]), iter(()), iter(""), iter(b""), iter({}), iter(set()), iter(range(0)),
                              reversed([]), reversed(range(0)), map(id, []), filter(None, []), zip(),
                              enumerate([]), iter(d.values()), iter(d.items()), (lambda: (yield))())}
ITER_TYPES = _iter_types()
KEYS, VALUES, ITEMS = type({}.keys()), type({}.values()), type({}.items())


def encode(x, opaque, budget):
    """x -> JSON-able tagged tree of plain values; `opaque(x)` encodes anything else."""
    budget[0] -= 1
    if budget[0] < 0:
        raise ValueError("value too large")
    t = type(x)
    if t in SCALARS:
        return x
    rec = lambda items: [encode(i, opaque, budget) for i in items]
    if t is list:
        return rec(x)
    if t is tuple:
        return {"t": rec(x)}
    if t is dict:
        return {"d": [[encode(k, opaque, budget), encode(v, opaque, budget)] for k, v in x.items()]}
    if t is set:
        return {"s": rec(x)}
    if t is frozenset:
        return {"f": rec(x)}
    if t is bytes:
        return {"b": x.hex()}
    if t is bytearray:
        return {"B": x.hex()}
    if t is complex:
        return {"c": [x.real, x.imag]}
    if t is range:
        return {"r": [x.start, x.stop, x.step]}
    if t is KEYS:
        return {"K": rec(x)}
    if t is VALUES:
        return {"V": rec(x)}
    if t is ITEMS:
        return {"I": [[encode(k, opaque, budget), encode(v, opaque, budget)] for k, v in x]}
    if t in ITER_TYPES or t.__module__ == "itertools":
        return {"i": rec(x)}
    # Subclasses of built-ins: the plain value, read through the base type's own C slots so that a
    # subclass's overridden methods are never what produces it.
    if issubclass(t, int):
        return int.__index__(x)
    if issubclass(t, float):
        return float.__float__(x)
    if issubclass(t, str):
        return str.__str__(x)
    if issubclass(t, complex):
        return {"c": [complex.real.__get__(x), complex.imag.__get__(x)]}
    if issubclass(t, bytes):
        return {"b": bytes.hex(x)}
    if issubclass(t, tuple):
        return {"t": rec(tuple.__iter__(x))}
    if issubclass(t, list):
        return rec(list.__iter__(x))
    if issubclass(t, dict):
        return {"d": [[encode(k, opaque, budget), encode(v, opaque, budget)] for k, v in dict.items(x)]}
    if issubclass(t, frozenset):
        return {"f": rec(frozenset.__iter__(x))}
    if issubclass(t, set):
        return {"s": rec(set.__iter__(x))}
    if t.__module__ == "numpy" and hasattr(x, "tolist"):
        return encode(x.tolist(), opaque, budget)
    return opaque(x)


def decode(x, handle):
    """JSON tree -> plain built-in values (and `handle(n)` for opaque tokens); anything else is refused."""
    t = type(x)
    if t in SCALARS:
        return x
    if t is list:
        return [decode(i, handle) for i in x]
    if t is not dict or len(x) != 1:
        raise ValueError("malformed value")
    (tag, v), = x.items()
    if tag == "h" and type(v) is list and len(v) == 2 and type(v[0]) is int and type(v[1]) in TRUTHS:
        return handle(*v)
    if type(v) is str and tag in "bB":
        return (bytes if tag == "b" else bytearray).fromhex(v)
    if type(v) is not list:
        raise ValueError("malformed value")
    if tag in "dI":
        pairs = [decode(p, handle) for p in v]
        if any(type(p) is not list or len(p) != 2 for p in pairs):
            raise ValueError("malformed value")
        return dict(pairs) if tag == "d" else dict(pairs).items()
    items = [decode(i, handle) for i in v]
    if tag == "c" and len(items) == 2 and all(type(i) is float for i in items):
        return complex(*items)
    if tag == "r" and len(items) == 3 and all(type(i) is int for i in items):
        return range(*items)
    conv = {"t": tuple, "s": set, "f": frozenset, "i": iter, "K": lambda i: dict.fromkeys(i).keys(),
            "V": lambda i: dict(enumerate(i)).values()}.get(tag)
    if conv is None:
        raise ValueError("malformed value")
    return conv(items)


class Opaque:
    """T's stand-in for a program object that is not a plain value: equal only to itself.

    It keeps the truth value P computed (an `re.Match` is truthy: MBPP 737 tests `assert check_str(s)`);
    that is one bit the program could as well have returned as a plain bool."""
    __slots__ = ("ref", "truth")

    def __init__(self, ref, truth):
        self.ref, self.truth = ref, truth

    def __repr__(self):
        return "<opaque program object #%d>" % self.ref

    def __bool__(self):
        if self.truth is None:
            raise TypeError("this program object has no truth value")
        return self.truth


def describe(e):
    try:
        text = str(e)
    except BaseException:
        text = "?"
    return ("%s: %s" % (type(e).__name__, text))[:500]


# ---- containment ---------------------------------------------------------------------------------
def enter_namespaces():
    flags = NEWNS | NEWPID | NEWNET | NEWIPC | NEWUTS
    uid, gid = os.geteuid(), os.getegid()
    if uid != 0:
        flags |= NEWUSER
    try:
        libc_call("unshare", flags)
    except OSError:
        return []
    if uid != 0:
        for path, text in (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", "0 %d 1" % uid),
                           ("/proc/self/gid_map", "0 %d 1" % gid)):
            with open(path, "w") as f:
                f.write(text)
        return ["userns", "netns,pidns,mountns,ipcns,utsns"]
    return ["netns,pidns,mountns,ipcns,utsns"]


def setup_filesystem(cfg):
    """Private mount view: everything read-only, private dirs hidden, a fresh tmpfs on /tmp, own /proc.

    A failure here is fatal (reported as a sandbox error): a half-built view could hide the interpreter
    and make every program fail silently."""
    tags = []
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    with open("/proc/self/mountinfo") as f:
        mounts = [(line.split()[4].encode().decode("unicode_escape"), line.split()[5]) for line in f]
    ro = True
    for point, opts in mounts:
        flags = sum(MOUNT_FLAGS.get(o, 0) for o in opts.split(","))
        try:
            mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
        except OSError:
            ro = ro and point != "/"
    if ro:
        tags.append("ro-fs")
    hidden = []
    for path in sorted(cfg["hide"]):
        if not any(path.startswith(h.rstrip("/") + "/") for h in hidden) and os.path.isdir(path):
            hidden.append(path)
    keep = [(p, os.open(p, os.O_PATH | os.O_DIRECTORY)) for p in cfg["keep"]
            if os.path.isdir(p) and any(p.startswith(h.rstrip("/") + "/") or p == h for h in hidden)]
    for path in hidden:
        size = "%dm" % cfg["disk_mb"] if path == "/tmp" else "1m"
        mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "size=%s,mode=755" % size)
    for path, fd in keep:
        os.makedirs(path, 0o755, exist_ok=True)
        mount("/proc/self/fd/%d" % fd, path, None, MS_BIND | MS_REC)
        try:  # already read-only when the remount above worked
            mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        except OSError:
            pass
        os.close(fd)
    if "/tmp" not in hidden:
        mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=%dm,mode=755" % cfg["disk_mb"])
    tags += ["hidden-dirs", "private-tmp"]
    for data in ("hidepid=2", None):  # some containers refuse a new proc: then the host's stays
        try:
            mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, data)
            return tags + ["private-proc"]
        except OSError:
            pass
    return tags


def become(uid, workdir, limits):
    """Drop to `uid` (if given), apply rlimits, no_new_privs and die-with-parent; chdir to workdir."""
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    for res, value in limits:
        hard = resource.getrlimit(res)[1]
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(res, (value, value))
    prctl(38, 1)  # PR_SET_NO_NEW_PRIVS
    prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (cleared by the uid change, so set it after)
    os.chdir(workdir)


def set_oom_score(value):
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(value))
    except OSError:
        pass


def quiet_stdio(keep=(0, 1, 2)):
    null = os.open(os.devnull, os.O_RDWR)
    for fd in keep:
        os.dup2(null, fd)
    os.close(null)


# ---- P: the program process ----------------------------------------------------------------------
def program_process(cfg, workdir, rfd, wfd):
    set_oom_score(1000)  # under memory pressure the program's processes die first, not T
    try:
        quiet_stdio()
        for name in os.listdir("/proc/self/fd"):
            if int(name) > 2 and int(name) not in (rfd, wfd):
                try:
                    os.close(int(name))
                except OSError:
                    pass
        limits = [(resource.RLIMIT_CPU, cfg["cpu_s"]), (resource.RLIMIT_AS, cfg["memory_mb"] << 20),
                  (resource.RLIMIT_FSIZE, cfg["file_mb"] << 20), (resource.RLIMIT_NOFILE, 256),
                  (resource.RLIMIT_CORE, 0)]
        if cfg["uids"]:
            limits.append((resource.RLIMIT_NPROC, cfg["max_procs"]))
        become(cfg["uids"][0] if cfg["uids"] else None, workdir, limits)
        os.environ.clear()
        os.environ.update(cfg["env"], HOME=workdir, TMPDIR=workdir)
    except Exception as e:
        send(wfd, {"fatal": "program process setup failed: " + describe(e)})
        return
    send(wfd, {"ready": True})  # the last word of trusted code: only this frame can report a harness fault
    handles, handle_of = [], {}  # objects stay referenced, so their ids stay unique

    def opaque(x):
        if id(x) not in handle_of:
            handle_of[id(x)] = len(handles)
            handles.append(x)
        try:
            truth = bool(x)
        except BaseException:
            truth = None
        return {"h": [handle_of[id(x)], truth if type(truth) is bool else None]}

    mod = types.ModuleType("solution")
    sys.modules["solution"] = mod
    ns = mod.__dict__
    try:
        exec(compile(cfg["setup"], "<setup>", "exec"), ns)
        exec(compile(cfg["program"], "<program>", "exec"), ns)
        names = [k for k, v in list(ns.items()) if not k.startswith("__") and callable(v)]
        modules = {k: v.__name__ for k, v in list(ns.items()) if type(v) is types.ModuleType}
        hello = {"names": names, "modules": modules}
    except BaseException as e:
        hello = {"error": describe(e)}
    send(wfd, hello)
    if "error" in hello:
        os._exit(0)
    while True:
        try:
            target, args, kwargs = recv(rfd)
        except EOFError:
            os._exit(0)
        try:
            fn = handles[target] if type(target) is int else ns[target]
            lookup = lambda n, truth: handles[n]
            result = fn(*decode(args, lookup), **decode(kwargs, lookup))
            reply = ["ret", encode(result, opaque, [2_000_000])]
        except BaseException as e:
            reply = ["exc", type(e).__name__, describe(e)]
        try:
            send(wfd, reply)
        except ValueError as e:
            send(wfd, ["exc", "ValueError", describe(e)])


# ---- T: the test process -------------------------------------------------------------------------
def rpc_client(rfd, wfd):
    """(call, Remote): T's side of the calls into P; results are decoded into plain values only."""
    handles, dead = {}, []

    def handle(n, truth):
        return handles.setdefault(n, Opaque(n, truth))

    def opaque(x):
        if type(x) is Opaque:
            return {"h": [x.ref, x.truth]}
        raise TypeError("cannot pass a %s to the program" % type(x).__name__)

    def call(target, args, kwargs):
        if dead:
            raise RuntimeError("the program process has ended")
        try:
            send(wfd, [target, encode(list(args), opaque, [2_000_000]), encode(kwargs, opaque, [2_000_000])])
            reply = recv(rfd)
        except (EOFError, OSError, ValueError) as e:  # after a bad frame the stream cannot be trusted
            dead.append(e)
            raise RuntimeError("the program process has ended or misbehaved") from None
        if type(reply) is list and len(reply) == 2 and reply[0] == "ret":
            return decode(reply[1], handle)
        if type(reply) is list and len(reply) == 3 and reply[0] == "exc" and type(reply[1]) is str:
            cls = getattr(builtins, reply[1], None)  # a built-in exception type, so tests can expect it
            if not (type(cls) is type and issubclass(cls, Exception)) or issubclass(cls, StopIteration):
                cls = RuntimeError
            try:
                exc = cls(str(reply[2])[:500])
            except Exception:
                exc = RuntimeError(str(reply[2])[:500])
            raise exc
        raise RuntimeError("malformed reply from the program process")

    class Remote:
        __slots__ = ("name",)

        def __init__(self, name):
            self.name = name

        def __call__(self, *args, **kwargs):
            return call(self.name, args, kwargs)

        def __repr__(self):
            return "<program function %s>" % self.name

    return call, Remote


def bind_program(ns, hello, tests, Remote):
    """Program callables become proxies in the tests' namespace; never over a builtin or setup name."""
    import importlib
    used = set()  # global names the tests mention: only those modules are imported on P's word
    for test in tests:
        try:
            stack = [compile(test, "<test>", "exec")]
        except BaseException:
            continue
        while stack:
            code = stack.pop()
            used.update(code.co_names)
            stack += [c for c in code.co_consts if type(c) is types.CodeType]
    for name, modname in dict(hello.get("modules", {})).items():
        if name in used and name not in ns and not hasattr(builtins, name) and all(
                part.isidentifier() for part in str(modname).split(".")):
            try:
                ns[name] = importlib.import_module(modname)
            except BaseException:
                pass
    names = {n for n in list(hello.get("names", []))[:10000] if type(n) is str and n.isidentifier()} - set(ns)
    for name in names - shadowing_that_could_rig_a_test(names, tests):
        ns[name] = Remote(name)


def shadowing_that_could_rig_a_test(names, tests):
    """Program names that shadow a builtin and that some test calls with a program value as argument.

    MBPP 126 defines `sum(a, b)` and tests `assert sum(10, 15) == 6`: that proxy is bound. But a program
    `abs` in `assert abs(f(x) - y) < 1e-9`, or `set` in `assert set(f(x)) == set(y)`, would decide the
    verdict without solving anything: there the tests keep the builtin."""
    shadow = {n for n in names if hasattr(builtins, n)}
    if not shadow:
        return set()
    import ast
    risky = set()
    for test in tests:
        try:
            tree = ast.parse(test)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if type(node) is ast.Call and type(node.func) is ast.Name and node.func.id in shadow:
                args = node.args + [k.value for k in node.keywords]
                if any(type(n) is ast.Name and n.id in names for a in args for n in ast.walk(a)):
                    risky.add(node.func.id)
    return risky


def test_process(cfg, workdir, report, rfd, wfd):
    limits = [(resource.RLIMIT_CPU, cfg["cpu_s"]), (resource.RLIMIT_AS, max(cfg["memory_mb"], 1024) << 20),
              (resource.RLIMIT_FSIZE, cfg["file_mb"] << 20), (resource.RLIMIT_CORE, 0)]
    ns = {"__name__": "__main__"}
    try:
        become(cfg["uids"][1] if cfg["uids"] else None, workdir, limits)
        tests = recv(0)["tests"]
        quiet_stdio((0, 1))
        exec(compile(cfg["setup"], "<setup>", "exec"), ns)
    except BaseException as e:
        report({"fatal": "test process setup failed (trusted setup or harness): " + describe(e)})
        return
    call, Remote = rpc_client(rfd, wfd)
    try:
        ready = recv(rfd)  # sent before any untrusted code ran
    except (EOFError, ValueError, OSError) as e:
        ready = {"fatal": "the program process died during setup: " + describe(e)}
    if ready != {"ready": True}:
        report({"fatal": str(ready.get("fatal"))[:500]})
        return
    try:
        hello = recv(rfd)
    except (EOFError, ValueError, OSError):
        hello = {"error": "the program process ended while loading"}
    error = hello.get("error") if type(hello) is dict else "malformed hello"
    if error is None:
        try:
            bind_program(ns, hello, tests, Remote)
        except Exception:
            error = "malformed hello"
    report({"program_error": str(error)[:500]} if error else {"loaded": True})
    for i, test in enumerate(tests):
        ok = False
        if error is None:
            try:
                exec(compile(test, "<test %d>" % i, "exec"), ns)
                ok = True
            except BaseException as e:
                report({"test_error": i, "error": describe(e)})
        report({"test": i, "ok": ok})
    report({"done": True})


def main():
    cfg = recv(0)
    sys.path.extend(cfg["sys_path"])  # started with -S: site-packages without running .pth code
    out = os.dup(1)
    nonce = cfg["nonce"]

    def report(obj):
        os.write(out, (nonce + " " + json.dumps(obj) + "\n").encode())

    prctl(1, signal.SIGKILL)
    tags = enter_namespaces()
    pid = os.fork()
    if pid:  # outer runner: wait for init of the new PID namespace
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    prctl(1, signal.SIGKILL)
    workdir = cfg["host_workdir"]
    if "mountns" in ",".join(tags):
        try:
            tags += setup_filesystem(cfg)
            workdir = "/tmp/work"
        except Exception as e:
            report({"fatal": "private filesystem setup failed: " + describe(e)})
            os._exit(0)
    twork = "/"
    if cfg["uids"]:
        tags.append("uid-split")
        if workdir == "/tmp/work":
            os.mkdir(workdir, 0o700)
            twork = "/tmp/t"
            os.mkdir(twork, 0o700)
            os.chown(twork, cfg["uids"][1], cfg["uids"][1])
        os.chown(workdir, cfg["uids"][0], cfg["uids"][0])
    elif workdir == "/tmp/work":
        os.mkdir(workdir, 0o700)
    report({"isolation": tags + ["rlimits"]})
    set_oom_score(-500)
    t_read, p_write = os.pipe()
    p_read, t_write = os.pipe()
    if os.fork() == 0:
        os.close(t_read), os.close(t_write)
        try:
            program_process(cfg, workdir, p_read, p_write)
        finally:
            os._exit(0)
    os.close(p_read), os.close(p_write)
    test_process(cfg, twork, report, t_read, t_write)
    os._exit(0)


main()
'''


@dataclasses.dataclass
class ExecResult:
    status: str  # "ok" (the harness worked; tests may still fail) | "timeout" | "crashed" | "sandbox_error"
    passed: list[bool]  # one per test
    error: str | None  # the program's load error, the first failing test's error, or what went wrong
    isolation: str  # measures in force, "+"-joined (see the module docstring)
    duration_s: float


def run_tests(program: str, tests: list[str], *, setup: str = "", timeout: float = 10.0,
              memory_mb: int = 2048) -> ExecResult:
    """Run `program`, then each trusted test statement against it; one bool per test (see module doc)."""
    start = time.monotonic()
    nonce = secrets.token_hex(16)
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    uids = None
    if as_root:
        uid = UID_BASE + 2 * secrets.randbelow(2**28)
        uids = [uid, uid + 1]
    try:
        workdir = tempfile.mkdtemp(prefix="harness-sbx-")
    except OSError as e:
        return ExecResult("sandbox_error", [False] * len(tests), f"no temporary directory: {e}", "none",
                          time.monotonic() - start)
    hide, keep = _fs_plan()
    cfg = {"nonce": nonce, "program": program, "setup": setup, "uids": uids, "host_workdir": workdir,
           "cpu_s": math.ceil(timeout) + 1, "memory_mb": int(memory_mb), "file_mb": FILE_MB,
           "disk_mb": DISK_MB, "max_procs": MAX_PROCS, "hide": hide, "keep": keep, "env": _CHILD_ENV,
           "sys_path": _site_paths()}
    payload = _frame(cfg) + _frame({"tests": list(tests)})
    cgroups, cg_tag = _cgroup_create(nonce, memory_mb) if as_root else ([], None)
    try:
        status, msgs, err = _supervise(payload, nonce, cgroups, timeout)
    finally:
        _cgroup_destroy(cgroups)
    result = _result(status, msgs, err, len(tests), cg_tag)
    if uids and "pidns" not in result.isolation:
        _kill_uid(uids[0])
    shutil.rmtree(workdir, ignore_errors=True)
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
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _RUNNER], stdin=subprocess.PIPE,
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
        elif "program_error" in m and status == "ok":
            err = "program failed to load: " + m["program_error"]
        elif "test_error" in m and test_error is None:
            test_error = f"test {m['test_error']}: {m['error']}"
    if err is None:
        err = test_error
    return ExecResult(status, passed, err, "+".join(isolation), 0.0)


def _fs_plan() -> tuple[list[str], list[str]]:
    """Directories to hide from the program, and the interpreter paths to keep visible inside them."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cands = [os.path.expanduser("~"), os.getcwd(), here, tempfile.gettempdir(), "/tmp", "/var/tmp", "/root",
             "/home", "/mnt", "/media", "/srv", "/opt", "/run/user", "/run/lock", "/var/lib", "/dev/shm"]
    cands += [os.environ[k] for k in ("HF_HOME", "HF_DATASETS_CACHE", "XDG_CACHE_HOME", "TORCH_HOME",
                                      "TRANSFORMERS_CACHE") if os.environ.get(k)]
    cands += ["/" + p.strip("/").split("/")[0] for p in (os.getcwd(), here) if p.strip("/")]
    system = {"/", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/proc", "/sys",
              "/dev", "/var", "/run", "/boot"}
    hide = sorted({os.path.realpath(p) for p in cands} - system)
    keep = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
            os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))}
    keep.update(p for p in site.getsitepackages() if os.path.isdir(p))
    keep = sorted({os.path.realpath(p) for p in keep})
    keep = [p for p in keep if not any(p.startswith(q.rstrip("/") + "/") for q in keep)]
    return hide, keep


@functools.lru_cache(maxsize=1)
def _site_paths() -> list[str]:
    """site-packages and the plain directories listed in its .pth files (the runner skips `site`,
    whose .pth hooks cost tens of milliseconds per start and run arbitrary code)."""
    paths = [p for p in site.getsitepackages() if os.path.isdir(p)]
    for d in list(paths):
        for name in sorted(os.listdir(d)):
            if name.endswith(".pth"):
                try:
                    with open(os.path.join(d, name)) as f:
                        lines = [line.strip() for line in f]
                except OSError:
                    continue
                plain = [line for line in lines if line and not line.startswith(("#", "import"))]
                paths += [os.path.join(d, p) for p in plain if os.path.isdir(os.path.join(d, p))]
    return paths


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


_CG_LIMITS = {"memory": lambda mb: [("memory.limit_in_bytes", mb << 20),
                                     ("memory.memsw.limit_in_bytes", mb << 20)],
              "pids": lambda mb: [("pids.max", MAX_PROCS + 16)],
              "cpu": lambda mb: [("cpu.cfs_period_us", 100_000), ("cpu.cfs_quota_us", 100_000)]}


def _cgroup_create(name: str, memory_mb: int) -> tuple[list[str], str | None]:
    """A fresh cgroup (v1) per controller under this process's own; ([], None) where not permitted."""
    try:
        with open("/proc/self/cgroup") as f:
            own = {c: line.rstrip("\n").split(":", 2)[2] for line in f
                   for c in line.split(":", 2)[1].split(",")}
    except OSError:
        return [], None
    dirs, names = [], []
    budget_mb = memory_mb + DISK_MB + 1024  # P, T (<= 1 GiB of its own) and the private tmpfs
    for ctl, limits in _CG_LIMITS.items():
        root = f"/sys/fs/cgroup/{ctl}"
        if ctl not in own or not os.path.isdir(root):
            continue
        d = os.path.join(root + own[ctl], f"harness-sbx-{name}")
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
