"""The sandbox's child: run by `harness.sandbox` as `python -I -S harness/sandbox_child.py`.

It imports nothing from the harness (only the standard library) and reads its work from stdin:
frame 1 (config and program), frame 2 (tests); each frame is a 4-byte big-endian length + JSON.
T reports on stdout as lines "<nonce> <json>". The design and its limits are in harness/sandbox.py.
"""

import builtins
import ctypes
import importlib
import json
import os
import platform
import resource
import signal
import struct
import sys
import types

LIBC = ctypes.CDLL(None, use_errno=True)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 8, 32, 4096, 16384
MS_MOVE, MS_PRIVATE = 8192, 1 << 18
MNT_DETACH = 2
NEWNS, NEWUTS, NEWIPC, NEWCGROUP = 0x20000, 0x4000000, 0x8000000, 0x2000000
NEWUSER, NEWPID, NEWNET = 0x10000000, 0x20000000, 0x40000000
MAX_MSG = 16 << 20  # largest frame accepted from the other (possibly hostile) process
SCALARS = (type(None), bool, int, float, str)
TRUTHS = (bool, type(None))


def libc_call(name, *args):
    if getattr(LIBC, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), name)


def _b(s):
    return None if s is None else s.encode()


def mount(src, dst, fstype, flags, data=None):
    libc_call("mount", _b(src), _b(dst), _b(fstype), ctypes.c_ulong(flags), _b(data))


def prctl(option, value, arg3=0):
    libc_call("prctl", option, ctypes.c_ulong(value), ctypes.c_ulong(arg3), ctypes.c_ulong(0), ctypes.c_ulong(0))


def read_exact(fd, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError("pipe closed")
        buf += chunk
    return bytes(buf)


def recv(fd, limit=MAX_MSG):
    """One frame; `limit=None` only for the trusted parent's frames (the program may be large)."""
    n = int.from_bytes(read_exact(fd, 4), "big")
    if limit is not None and n > limit:
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
    def rec(items):
        return [encode(i, opaque, budget) for i in items]

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
        return f"<opaque program object #{self.ref}>"

    def __bool__(self):
        if self.truth is None:
            raise TypeError("this program object has no truth value")
        return self.truth


def describe(e):
    try:
        text = str(e)
    except BaseException:
        text = "?"
    return (f"{type(e).__name__}: {text}")[:500]


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
        for path, text in (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", f"0 {uid} 1"),
                           ("/proc/self/gid_map", f"0 {gid} 1")):
            with open(path, "w") as f:
                f.write(text)
        return ["userns", "netns,pidns,mountns,ipcns,utsns"]
    return ["netns,pidns,mountns,ipcns,utsns"]


def remount(path, flags, required=True):
    """Remount a bind mount with `flags` added to the flags it has (in a user namespace the kernel
    refuses a remount that would drop a locked flag, atime flags included)."""
    st = os.statvfs(path).f_flag
    keep = {2: MS_NOSUID, 4: MS_NODEV, 8: MS_NOEXEC, 1024: 1024, 2048: 2048, 4096: 1 << 21}
    have = sum(v for k, v in keep.items() if st & k) | (MS_RDONLY if st & 1 else 0)
    try:
        mount(None, path, None, MS_REMOUNT | MS_BIND | have | flags)
    except OSError:
        if required:
            raise


def setup_filesystem(cfg):
    """A new root built from an allow-list: a read-only tmpfs holding read-only binds of the interpreter,
    its standard library and the system's shared libraries (their Python package folders covered by
    empty tmpfs), a few /dev nodes, a fresh /proc, and a fresh writable tmpfs on /tmp. The old root is
    detached, so nothing else on the host (data, caches, repositories, site-packages) has a path.

    A failure here is fatal (reported as a sandbox error): a half-built view could hide the interpreter
    and make every program fail silently."""
    plan = cfg["fs"]
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    root = cfg["host_workdir"]
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=755")
    # the private /tmp first: an allowed package of a venv under /tmp (e.g. a CI clone) is bound on top of
    # it below, instead of being hidden by it
    os.makedirs(root + "/tmp", 0o755, exist_ok=True)
    mount("tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={cfg['disk_mb']}m,mode=755")
    for src in plan["binds"]:
        dst = root + src
        if os.path.isdir(src):
            os.makedirs(dst, 0o755, exist_ok=True)
        elif os.path.exists(src):
            os.makedirs(os.path.dirname(dst), 0o755, exist_ok=True)
            open(dst, "w").close()
        else:
            continue
        mount(src, dst, None, MS_BIND | MS_REC)
        remount(dst, MS_RDONLY | MS_NOSUID | MS_NODEV)
    masks = [root + path for path in plan["masks"] if os.path.isdir(root + path)]
    for path in masks:  # Python package folders inside the bound system trees
        # writable until the allowed packages have their mount points in it (the interpreter's own
        # site-packages, e.g. a pyenv or system Python with numpy installed there), read-only after
        mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "size=4k,mode=755")
    for src in plan["packages"]:  # packages allowed back on top of a mask (numpy)
        os.makedirs(root + src, 0o755, exist_ok=True)
        mount(src, root + src, None, MS_BIND | MS_REC)
        remount(root + src, MS_RDONLY | MS_NOSUID | MS_NODEV)
    for path in masks:
        remount(path, MS_RDONLY | MS_NOSUID | MS_NODEV)
    for link, target in plan["links"]:
        if not os.path.lexists(root + link):
            os.makedirs(os.path.dirname(root + link), 0o755, exist_ok=True)
            os.symlink(target, root + link)
    for name in ("null", "zero", "full", "random", "urandom"):
        os.makedirs(root + "/dev", 0o755, exist_ok=True)
        open(root + "/dev/" + name, "w").close()
        mount("/dev/" + name, root + "/dev/" + name, None, MS_BIND)
        remount(root + "/dev/" + name, MS_NOSUID, required=False)
    os.makedirs(root + "/proc", 0o755, exist_ok=True)
    tags = ["allowlist-fs", "private-tmp"]
    for data in ("hidepid=2", None):  # some containers refuse a new proc: then /proc stays empty
        try:
            mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, data)
            tags.append("private-proc")
            break
        except OSError:
            pass
    os.chdir(root)
    try:  # pivot_root(".", "."), then detach the old root stacked under the new one
        if LIBC.syscall(SYSCALLS["pivot_root"], b".", b".") != 0:
            raise OSError(ctypes.get_errno(), "pivot_root")
        libc_call("umount2", b".", MNT_DETACH)
    except (OSError, KeyError):  # e.g. an initramfs root: move the new root over / and chroot
        mount(root, "/", None, MS_MOVE)
        libc_call("chroot", b".")
    os.chdir("/")
    mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    importlib.invalidate_caches()
    return tags


# Seccomp: system calls refused with EPERM (ENOSYS for clone3, so that libc falls back to clone, whose
# namespace flags are then checked). x86_64 only; elsewhere no filter is installed (and no tag shown).
DENIED = {  # x86_64 numbers
    "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "unshare": 272, "setns": 308,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "mount_setattr": 442, "add_key": 248, "request_key": 249, "keyctl": 250, "bpf": 321,
    "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
    "pidfd_getfd": 438, "kexec_load": 246, "kexec_file_load": 320, "init_module": 175, "finit_module": 313,
    "delete_module": 176, "reboot": 169, "swapon": 167, "swapoff": 168, "acct": 163, "quotactl": 179,
    "syslog": 103, "open_by_handle_at": 304, "name_to_handle_at": 303, "fanotify_init": 300,
    "settimeofday": 164, "clock_settime": 227, "clock_adjtime": 305, "adjtimex": 159, "iopl": 172,
    "ioperm": 173, "vhangup": 153, "lookup_dcookie": 212, "nfsservctl": 180, "sethostname": 170,
    "setdomainname": 171,
}
SYSCALLS = {"pivot_root": 155, "clone": 56, "clone3": 435} if platform.machine() == "x86_64" else {}
AUDIT_ARCH_X86_64 = 0xC000003E
NS_FLAGS = NEWNS | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET | NEWCGROUP


def seccomp_filter():
    """The BPF program (bytes) for the deny-list above."""
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    prog = []  # (code, jt_label_or_offset, jf, k)
    ld_abs, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    prog.append((ld_abs, 0, 0, 4))  # seccomp_data.arch
    prog.append((jeq, 1, 0, AUDIT_ARCH_X86_64))
    prog.append((ret, 0, 0, eperm))  # any other ABI (i386 via int 0x80): refused
    prog.append((ld_abs, 0, 0, 0))  # seccomp_data.nr
    prog.append((jge, "deny", 0, 0x40000000))  # the x32 ABI
    prog.append((jeq, "enosys", 0, SYSCALLS["clone3"]))
    prog.append((jeq, "clone", 0, SYSCALLS["clone"]))
    for nr in sorted(set(DENIED.values())):
        prog.append((jeq, "deny", 0, nr))
    prog.append((ret, 0, 0, allow))
    labels = {"clone": len(prog)}
    prog.append((ld_abs, 0, 0, 16))  # low 32 bits of args[0]: clone's flags
    prog.append((jset, "deny", 0, NS_FLAGS))
    prog.append((ret, 0, 0, allow))
    labels["enosys"] = len(prog)
    prog.append((ret, 0, 0, enosys))
    labels["deny"] = len(prog)
    prog.append((ret, 0, 0, eperm))
    out = b""
    for pc, (code, jt, jf, k) in enumerate(prog):
        jt = labels[jt] - pc - 1 if type(jt) is str else jt
        assert 0 <= jt < 256
        out += struct.pack("=HBBI", code, jt, jf, k)
    return out


def install_seccomp():
    """Install the filter on the calling thread (after no_new_privs); False where not supported."""
    if not SYSCALLS:
        return False
    code = seccomp_filter()

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buf = ctypes.create_string_buffer(code, len(code))
    prog = Prog(len(code) // 8, ctypes.cast(buf, ctypes.c_void_p))
    prctl(22, 2, ctypes.addressof(prog))  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
    return True


def become(uid, workdir, limits):
    """Drop to `uid` (if given), apply rlimits, no_new_privs, die-with-parent and the seccomp filter;
    chdir to workdir. Returns whether the filter is in force."""
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
    return install_seccomp()


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
        program, setup = cfg["program"], cfg["setup"]
        cfg.clear()
    except Exception as e:
        send(wfd, {"fatal": "program process setup failed: " + describe(e)})
        return
    send(wfd, {"ready": True})  # the last word of trusted code: only this frame can report a harness fault
    try:
        go = recv(rfd)  # T has checked and loaded the trusted tests; nothing untrusted ran before this
    except (EOFError, ValueError, OSError):
        os._exit(0)
    if go != {"go": True}:
        os._exit(0)
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

    def lookup(n, truth):
        return handles[n]

    mod = types.ModuleType("solution")
    sys.modules["solution"] = mod
    ns = mod.__dict__
    try:
        exec(compile(setup, "<setup>", "exec"), ns)
        exec(compile(program, "<program>", "exec"), ns)
        del program
        hello = {"names": [k for k, v in list(ns.items()) if not k.startswith("__") and callable(v)]}
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
        raise TypeError(f"cannot pass a {type(x).__name__} to the program")

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
            return f"<program function {self.name}>"

    return call, Remote


def names_used(codes):
    """Global names that compiled trusted code (nested functions included) refers to."""
    used, stack = set(), list(codes)
    while stack:
        code = stack.pop()
        used.update(code.co_names)
        stack += [c for c in code.co_consts if type(c) is types.CodeType]
    return used


def bind_program(ns, hello, codes, allowed, Remote):
    """Put a proxy in the tests' namespace for each program callable the tests may resolve.

    With `allowed` (the task's entry points) exactly those names, over anything: an entry point the
    program does not define is removed, so a trusted stub (a HumanEval prompt's `def f(...): "doc"`)
    is never what the tests call. Without it, the program callables the tests name that are neither
    builtins nor defined by the trusted setup. The program supplies no other name, and no module."""
    defined = {n for n in list(hello.get("names", []))[:10000] if type(n) is str and n.isidentifier()}
    if allowed is not None:
        for name in allowed:
            if name in defined:
                ns[name] = Remote(name)
            else:
                ns.pop(name, None)
        return
    for name in defined & names_used(codes):
        if name not in ns and not hasattr(builtins, name):
            ns[name] = Remote(name)


def test_process(cfg, workdir, report, rfd, wfd):
    limits = [(resource.RLIMIT_CPU, cfg["cpu_s"]), (resource.RLIMIT_AS, max(cfg["memory_mb"], 1024) << 20),
              (resource.RLIMIT_FSIZE, cfg["file_mb"] << 20), (resource.RLIMIT_CORE, 0)]
    ns = {"__name__": "__main__"}
    try:
        become(cfg["uids"][1] if cfg["uids"] else None, workdir, limits)
        frame = recv(0, limit=None)
        quiet_stdio((0, 1))
    except BaseException as e:
        report({"fatal": "test process setup failed: " + describe(e)})
        return
    # The trusted code is compiled and loaded before the program runs: a fault in it is the data's.
    tests, codes = frame["tests"], []
    where = "setup"
    try:
        setup = compile(cfg["setup"], "<setup>", "exec")
        where = "test setup"
        test_setup = compile(frame["test_setup"], "<test setup>", "exec")
        for i, test in enumerate(tests):
            where = f"test {i}"
            codes.append(compile(test, f"<test {i}>", "exec"))
        where = "setup"
        exec(setup, ns)
        where = "test setup"
        exec(test_setup, ns)
    except BaseException as e:
        report({"bad_test": f"{where}: {describe(e)}"})
        return
    call, Remote = rpc_client(rfd, wfd)
    try:
        ready = recv(rfd)  # sent before any untrusted code ran
    except (EOFError, ValueError, OSError) as e:
        ready = {"fatal": "the program process died during setup: " + describe(e)}
    if ready != {"ready": True}:
        report({"fatal": str(ready.get("fatal"))[:500]})
        return
    send(wfd, {"go": True})
    try:
        hello = recv(rfd)
    except (EOFError, ValueError, OSError):
        hello = {"error": "the program process ended while loading"}
    error = hello.get("error") if type(hello) is dict else "malformed hello"
    if error is None:
        try:
            bind_program(ns, hello, codes, frame["names"], Remote)
        except Exception:
            error = "malformed hello"
    report({"program_error": str(error)[:500]} if error else {"loaded": True})
    for i, code in enumerate(codes):
        ok = False
        if error is None:
            try:
                exec(code, ns)
                ok = True
            except BaseException as e:
                report({"test_error": i, "error": describe(e)})
        report({"test": i, "ok": ok})
    report({"done": True})


def main():
    cfg = recv(0, limit=None)
    sys.path.extend(cfg["sys_path"])  # started with -S: only the allowed packages' folder, no .pth code
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
    if SYSCALLS:
        tags.append("seccomp")
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
    cfg["program"] = ""
    test_process(cfg, twork, report, t_read, t_write)
    os._exit(0)


if __name__ == "__main__":
    main()
