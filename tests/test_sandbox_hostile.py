"""Hostile programs against the code runner (harness/sandbox.py): every one is contained and scores 0.

Each case is a program written to *pass* its test only if the attack works: it returns "HACKED" (or the
secret answer) when it escaped, read something it must not, or fooled the comparison. So "contained"
means: `passed` is all False, the harness reports no `sandbox_error`, nothing outside the sandbox
changed (sentinel files, no stray files with this run's token), and no process the program started is
still alive afterwards (they rename themselves to a marker, looked up in /proc). The dangerous ones are
bounded (a few hundred forks, a few GiB) so that a containment failure cannot take the machine down.
Run: `pytest -q tests/test_sandbox_hostile.py` (about 20 s on 2 cores).
"""

import os
import secrets
import signal
import socket
import sys
import time

import pytest

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
def mark():
    try:
        with open("/proc/self/comm", "w") as fh:
            fh.write(MARK)
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
    assert _marked_processes() == []
    assert _stray_files() == []
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
