"""Results on disk: atomic writes, the summary schema and its reader, and provenance.

One run writes `DIR/summary.json` (lm-eval-like keys plus what the peers don't record), `DIR/samples.jsonl`
and, for RL runs, `DIR/curve.csv`. Every write goes to a temporary file in the same folder and is
renamed into place, so a reader never sees a half-written file.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
REQUIRED_KEYS = ("schema_version", "task", "n", "metrics", "config")


class ResultError(ValueError):
    """A result file that cannot be used (missing, corrupt, wrong schema); the message names the file."""


def check_out_dir(path: str | os.PathLike, *, protect: tuple[str, ...] = ("summary.json",),
                  overwrite: bool = False, flag: str = "--out") -> Path:
    """Fail early, with a ResultError that names `path`, unless this command can write its results there.

    Checked before any work: `path` is (or can be created as) a writable folder, and it holds none of the
    files in `protect` (another run's results) unless `overwrite`. The probe leaves nothing behind:
    folders it had to create are removed again.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ResultError(f"{flag} {path} is a file, not a folder; pass a folder path")
    existing = [name for name in protect if (path / name).exists()]
    if existing and not overwrite:
        raise ResultError(f"{flag} {path} already holds {', '.join(existing)} from another run; pass another "
                          f"{flag} or --overwrite to replace it")
    # Several processes may probe the same folder at once (the ranks of `torchrun`): a folder another one
    # created first is fine, and one that another removed again between our mkdir and our probe is retried.
    for attempt in range(3):
        created: list[Path] = []
        try:
            missing = [d for d in (path, *path.parents) if not d.exists()]
            for d in reversed(missing):
                try:
                    d.mkdir()
                except FileExistsError:
                    continue
                created.append(d)
            fd, probe = tempfile.mkstemp(dir=path, prefix=".write-probe.")
            os.close(fd)
            os.unlink(probe)
            break
        except OSError as e:
            if isinstance(e, FileNotFoundError) and attempt < 2:
                continue  # removed under us by another process's clean-up: probe again
            raise ResultError(f"cannot write to {flag} {path} ({e.strerror or type(e).__name__}); pass a folder "
                              "you can write to") from None
        finally:
            for d in reversed(created):
                try:
                    d.rmdir()
                except OSError:
                    pass
    return path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; result files get the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(to_jsonable(r), sort_keys=True) + "\n" for r in rows))


def to_jsonable(obj: Any) -> Any:
    """NaN/inf become None (strict JSON); tuples become lists; numpy/torch scalars become Python numbers."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return to_jsonable(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def read_summary(path: str | os.PathLike) -> dict:
    """Read and validate a summary.json; raise ResultError naming the file and what is wrong."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResultError(f"{path}: corrupt JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ResultError(f"{path}: expected a JSON object")
    version = obj.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ResultError(f"{path}: schema_version {version!r}, this harness reads {SCHEMA_VERSION}; "
                          "re-run it or regenerate the result with a matching harness version")
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise ResultError(f"{path}: missing field(s) {', '.join(missing)}")
    return obj


def git_hash() -> str | None:
    """The commit of the harness's source tree (`-dirty` with uncommitted changes to tracked files).

    Where the tree is no git checkout (a source archive, a tree copied to another machine), the commit
    named by the environment variable HARNESS_GIT_HASH is recorded as `<hash>-declared`: stated by
    whoever ran it, not checked."""
    declared = os.environ.get("HARNESS_GIT_HASH", "").strip()
    declared = f"{declared}-declared" if declared else None
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        if out.returncode != 0:
            return declared
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5, cwd=Path(__file__).resolve().parent).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return declared


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("mdrl-harness", "torch", "transformers", "datasets", "accelerate", "math-verify", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                            "machine": platform.machine()}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_count"] = torch.cuda.device_count()
    except ImportError:
        pass
    return info


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def provenance() -> dict[str, Any]:
    return {"date": now_iso(), "git_hash": git_hash(), "versions": versions(), "hardware": hardware()}


LM_EVAL_FILE = "lm_eval_results.json"


def lm_eval_layout(summaries: list[dict]) -> dict:
    """Evaluation summaries in lm-evaluation-harness's results layout, for the tools that read it.

    `results[task]["<metric>,none"]` and `"<metric>_stderr,none"` (filter `none`: the task's own
    extraction), plus `configs`, `versions`, `n-shot`, `n-samples`, `higher-is-better` and `config`.
    The stderr of a metric in [0, 1] is that of a mean of per-problem successes, sqrt(p (1 - p) / (n - 1))
    (lm-eval's `mean_stderr` for 0/1 scores); for any other metric it is "N/A", as lm-eval writes it
    when it has none.
    """
    out: dict = {"results": {}, "configs": {}, "versions": {}, "n-shot": {}, "n-samples": {},
                 "higher_is_better": {}, "config": {}}
    for s in summaries:
        task, n = s["task"], int(s.get("n") or 0)
        res: dict = {"alias": task}
        for name, value in (s.get("metrics") or {}).items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            res[f"{name},none"] = value
            binary = 0.0 <= value <= 1.0 and n > 1
            res[f"{name}_stderr,none"] = math.sqrt(value * (1 - value) / (n - 1)) if binary else "N/A"
        out["results"][task] = res
        cfg = s.get("config") or {}
        out["configs"][task] = {"task": task, "dataset_path": cfg.get("data"), "test_split": cfg.get("split"),
                                "output_type": "generate_until", "num_fewshot": cfg.get("num_fewshot", 0),
                                "generation_kwargs": s.get("decode"), "repeats": s.get("n_samples"),
                                "metric_list": [{"metric": m, "higher_is_better": True} for m in s.get("metrics", {})],
                                "metadata": {"harness_primary_metric": s.get("primary_metric")}}
        out["versions"][task] = s.get("schema_version", SCHEMA_VERSION)
        out["n-shot"][task] = int(cfg.get("num_fewshot") or 0)
        out["n-samples"][task] = {"original": n, "effective": n}
        out["higher_is_better"][task] = {m: True for m in s.get("metrics", {})}
    if summaries:
        first = summaries[0]
        cfg = first.get("config") or {}
        out["config"] = {"model": "harness", "model_args": f"pretrained={first.get('model')}",
                         "batch_size": cfg.get("batch_size"), "limit": cfg.get("limit"),
                         "random_seed": first.get("seed"), "gen_kwargs": first.get("decode"),
                         "device": (first.get("hardware") or {}).get("device")}
        out["git_hash"] = first.get("git_hash")
        out["date"] = first.get("date")
        out["transformers_version"] = (first.get("versions") or {}).get("transformers")
    return out


def write_lm_eval_results(path: str | os.PathLike, summaries: list[dict]) -> None:
    atomic_write_json(path, to_jsonable(lm_eval_layout(summaries)))
