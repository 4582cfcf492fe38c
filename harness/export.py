"""Export a trained policy as a folder that transformers / peft load, and `--model hf:FOLDER` evaluates.

* full fine-tune: `save_pretrained` of the module (safetensors) and of the tokenizer; for a model whose
  code ships with its weights (LLaDA, Dream, MMaDA: `auto_map` in config.json) the code files of the
  folder it was loaded from are copied next to them, so `AutoModel.from_pretrained(policy,
  trust_remote_code=True)` works without the original folder.
* LoRA: peft's `save_pretrained` of the adapter (adapter_config.json + adapter_model.safetensors) whose
  `base_model_name_or_path` names the base (an absolute folder, or the hub id it was loaded from), and the
  tokenizer. `load_model("hf:FOLDER")` sees adapter_config.json and loads base + adapter.

Both write `harness_policy.json` (kind, base, what produced it) and go to a temporary sibling folder
renamed into place, so a crash never leaves half a policy under the final name.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from harness.lora import is_peft


def policy_source(model) -> str | None:
    """Where the model's base weights came from: an absolute local folder or a hub id."""
    src = getattr(model, "adapter_base", None) or getattr(model, "source", None)
    if src is None:
        return None
    p = Path(src).expanduser()
    return str(p.resolve()) if p.is_dir() else str(src)


def code_files(source: str | None) -> list[Path]:
    """The python files of a model folder (remote code); for a hub id, those in the local hub cache."""
    if not source:
        return []
    folder = Path(source)
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(source, local_files_only=True, allow_patterns=["*.py"]))
        except Exception:  # noqa: BLE001 - not cached: nothing to copy (the config's auto_map still names it)
            return []
    return sorted(p for p in folder.glob("*.py") if p.is_file())


def save_policy(model, folder: str | Path, *, module=None, info: dict | None = None,
                state_dict: dict | None = None) -> dict:
    """Write `model`'s policy (or `module`) to `folder`; returns its record. `state_dict`: the full weights
    gathered from sharded processes (FSDP: `Accelerator.get_state_dict`), saved in place of the module's."""
    extra = {} if state_dict is None else {"state_dict": state_dict}
    folder = Path(folder)
    module = model.module if module is None else module
    source = policy_source(model)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        if is_peft(module):
            kind = "adapter"
            cfg = module.peft_config[module.active_adapter]
            if source:
                cfg.base_model_name_or_path = source
            module.save_pretrained(str(tmp), **extra)
            files = []
        else:
            kind = "full"
            module.save_pretrained(str(tmp), safe_serialization=True, **extra)
            files = []
            if getattr(module.config, "auto_map", None):
                for f in code_files(source):
                    if not (tmp / f.name).exists():
                        shutil.copy2(f, tmp / f.name)
                        files.append(f.name)
        if getattr(model, "tokenizer", None) is not None:
            model.tokenizer.save_pretrained(str(tmp))
        record = {"kind": kind, "base": source if kind == "adapter" else None, "source": source,
                  "code_files": files, **(info or {})}
        (tmp / "harness_policy.json").write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            os.replace(folder, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record
