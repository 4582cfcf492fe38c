"""Model adapters (DESIGN.md section 3): one narrow interface over every masked diffusion model.

    load_model("tiny", task="arith")              # the embedded model, from $HARNESS_HOME/models/tiny-arith/
    load_model("llada-8b-instruct", device="cuda")  # a preset = hf:GSAI-ML/LLaDA-8B-Instruct
    load_model("hf:/path/to/folder")               # any local transformers folder (or a hub id)
    load_model("gold")                            # answers with each Example.solution

A `DiffusionModel` wraps a transformers module and exposes `logits(ids, attention_mask) -> (B, L, V)`,
the mask / pad / EOS ids, the tokenizer and, for multimodal models, the id range of the image codebook.
Families differ in four small ways, all handled here and nowhere else:

* LLaDA (model_type `llada`): mask id 126336 (its tokenizer does not name a mask token); padding goes
  in as a 4-D boolean `attention_bias` (B, 1, L, L). Never a 2-D `attention_mask`: the upstream code
  turns that into a *causal* bias plus the padding mask, so a padded batch is silently decoded by a
  left-to-right model (logits up to 1.5 away from the unpadded row on the tiny fixture). RoPE sees only
  offsets, so left padding needs no position ids.
* Dream (model_type `Dream`): predicts token i at position i-1 (it was adapted from an autoregressive
  model), so its logits are shifted back by one; padding goes in as a 4-D boolean mask plus position ids
  counted from the first real token, as Dream's own `diffusion_generate` does. The first real token of a
  padded row keeps its own output row, as position 0 of an unpadded row does.
* MMaDA (model_type `mmada`): LLaDA's ids plus an image codebook of `config.codebook_size` (8192) ids
  placed right after the text tokenizer's vocabulary (`len(tokenizer)`, MMaDA's reserved-token layout);
  padding goes in as a 4-D `attention_bias`, as in MMaDA's own generators.
* Everything else (the embedded `tiny` RoFormer, any `AutoModelForMaskedLM`): 2-D `attention_mask`,
  and, where the forward takes them, position ids counted from the first real token so that left padding
  does not move the prompt (rotary models such as RoFormer need none: they see only offsets).

At load, `check_padding` runs a cheap probe (two forwards of a dozen tokens): a prompt alone and the
same prompt left-padded inside a batch must give the same logits (<= 1e-4 in float32, scaled for
bf16/fp16); a model whose code breaks that is refused with a one-line `ModelError`, because every
batched evaluation and RL rollout would be silently wrong.

Supported `transformers`: 4.46-4.57 (pinned `<5` in pyproject.toml). The upstream LLaDA and Dream code
that ships in their hub folders does not load under transformers 5 (LLaDA: `all_tied_weights_keys`;
Dream: rotary init `KeyError: 'default'`, then `_tied_weights_keys`); pinning the range in which the
unmodified code runs serves users better than patching third-party classes at import time, which would
have to follow every 5.x change and could alter numerics silently. Any failure inside a model's own
code is one line naming the model, the error and what to do.

Nothing is downloaded unless the user names a hub id; an unreachable hub id fails with a one-line
`ModelError` that says to pass a local folder. LoRA (peft) and multi-GPU (accelerate) wrap `.module`
from the outside; `logits` keeps working on the wrapped module.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import time
from pathlib import Path

import torch

from harness.environment import harness_home
from harness.seeds import derive_seed


class _DropGenerateNotice(logging.Filter):
    """Drops transformers' four-line notice that a class defining `prepare_inputs_for_generation` without
    `GenerationMixin` will lose `.generate()` (RoFormerForMaskedLM, so the tiny models, print it at every
    load). The harness never calls `.generate()`: its samplers call the forward. Every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "directly inherit from `GenerationMixin`" not in record.getMessage()


logging.getLogger("transformers.modeling_utils").addFilter(_DropGenerateNotice())


class ModelError(RuntimeError):
    """A model that cannot be loaded; the one-line message says what to pass instead."""


PRESETS: dict[str, str] = {
    "llada-8b-instruct": "hf:GSAI-ML/LLaDA-8B-Instruct",
    "llada-8b-base": "hf:GSAI-ML/LLaDA-8B-Base",
    "dream-7b-instruct": "hf:Dream-org/Dream-v0-Instruct-7B",
    "dream-7b-base": "hf:Dream-org/Dream-v0-Base-7B",
    "mmada-8b": "hf:Gen-Verse/MMaDA-8B-Base",
    "mmada-8b-mixcot": "hf:Gen-Verse/MMaDA-8B-MixCoT",
}

LLADA_MASK_ID = 126336  # LLaDA's (and MMaDA's) mask token; their tokenizers do not declare it
MMADA_CODEBOOK_SIZE = 8192  # MAGVIT-v2 codebook of MMaDA, used when the config does not say
# completions end at the first of these (instruct models end a turn with one and pad with another)
_STOP_TOKENS = ("<|endoftext|>", "<|eot_id|>", "<|im_end|>", "[EOS]")


def tiny_model_path(task: str) -> Path:
    """Where the embedded model pretrained for `task` lives: `$HARNESS_HOME/models/tiny-<task>/`."""
    return harness_home() / "models" / f"tiny-{task}"


HASH_LIMIT_BYTES = 2 * 1024 ** 3  # larger weights are not hashed for a summary (LLaDA-8B: 16 GB, ~1 min)


def weights_sha256(spec: str, task: str | None = None) -> str | None:
    """sha256 of the weights a model spec loads, where they are local and at most HASH_LIMIT_BYTES: the
    embedded `tiny` model of `task`, or an `hf:<local folder>` (its *.safetensors, else *.bin files, in name
    order, hashed as one stream). None for hub ids, `gold` and larger folders. Recorded in every summary, so
    that two runs of "tiny" made with different tiny models are never taken for the same experiment."""
    if spec == "tiny":
        folder = tiny_model_path(task) if task else None
    elif spec.startswith("hf:"):
        folder = Path(spec[3:]).expanduser()
    else:
        return None
    if folder is None or not folder.is_dir():
        return None
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not files or sum(f.stat().st_size for f in files) > HASH_LIMIT_BYTES:
        return None
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def is_pretrained(task: str) -> bool:
    """True when a complete tiny model for `task` is cached (pretrain renames the folder into place last)."""
    p = tiny_model_path(task)
    return (p / "config.json").is_file() and (p / "tokenizer.json").is_file()


def model_names() -> list[str]:
    return ["gold", "tiny", "hf:<hub-id-or-local-folder>", *sorted(PRESETS)]


def check_model_name(spec: str) -> None:
    """An unknown model name fails here, before data or weights are loaded (`load_model` would say the same)."""
    from harness.registry import UnknownNameError

    if spec in ("gold", "tiny") or spec in PRESETS or spec.startswith("hf:"):
        return
    raise UnknownNameError("model", spec, model_names())


def check_cache_model(model: str, cache: str | None, flag: str = "--cache ", lora: bool = False,
                      instead: str = "--threshold/--factor") -> None:
    """Refuse, from the model's *name* and before any model work, a cache that `cached_forward` would refuse at
    the first decode: CacheUnsupported, one line. `flag` is how the user asked (`--cache `, `--set
    rollout_cache=`, `cache=`), so the message says what to pass instead, and `instead` names the parallel
    decoding settings that work for every model; `lora`: peft adapters will wrap the module. Accepted: `gold`
    (it never decodes), `tiny`, and an `hf:` folder whose config.json says `roformer` (an exported tiny policy,
    a random RoFormer in the tests); a local path that does not exist is left to the loader's "not found".
    Hub ids, presets, adapter folders and other families are refused: the harness does not control their code
    (harness/kv_cache.py)."""
    from harness.kv_cache import CacheUnsupported

    if cache in (None, "none") or model == "gold":
        return
    fix = f"use {flag}none ({instead} parallel decoding works with every model)"
    need = f"{flag}{cache}: the KV cache needs a model whose code the harness controls (tiny)"
    if lora:
        raise CacheUnsupported(f"{need}, unwrapped; with --lora-r the peft adapters wrap its forward, so {fix}")
    if model == "tiny":
        return
    target = PRESETS.get(model, model).removeprefix("hf:")
    folder = Path(target).expanduser()
    if not folder.is_dir():
        if target.startswith((".", "/", "~")) or target.count("/") > 1:
            return  # a missing folder: load_hf says "model folder not found" before anything decodes
        raise CacheUnsupported(f"{need}; {model} is a hub model that runs its own code; {fix}")
    config = folder / "config.json"
    if not config.is_file():
        what = "a LoRA adapter folder" if (folder / "adapter_config.json").is_file() else "a folder without config.json"
        raise CacheUnsupported(f"{need}; {model} is {what}; {fix}")
    try:
        kind = str(json.loads(config.read_text(encoding="utf-8")).get("model_type", ""))
    except (OSError, ValueError, AttributeError):
        return  # unreadable: load_hf names the problem
    if kind.lower() != "roformer":
        raise CacheUnsupported(f"{need}; {model} is a {kind or 'model without model_type'} model whose own code "
                               f"the harness runs as is; {fix}")


class GoldModel:
    """Answers every example with its reference solution (a verifier sanity check, like lm-eval's dummy).

    It has no decoder (`decodes` is False, so no decoder settings are made or recorded for it); the
    evaluator asks it for completions through `complete`, the same call it makes on a DiffusionModel."""

    decodes = False  # False: `complete` needs no decoder settings and no model calls
    is_gold = True  # kept for callers outside the harness; the harness reads `decodes`
    name = "gold"
    image_token_range = None

    def complete(self, task, examples, decode=None, *, n_samples: int = 1, **_) -> tuple[list, list, int, int, float]:
        """(completions, owners, nfe, tokens, seconds): each example's gold solution, n_samples times."""
        owners = [ex for ex in examples for _ in range(n_samples)]
        return [ex.solution for ex in owners], owners, 0, 0, 0.0

    def __repr__(self) -> str:
        return "GoldModel()"


class DecodingModel:
    """What every model that decodes shares: `complete` through harness.sampling's decoders. A model adapter
    (DiffusionModel, a test's fake) subclasses it and provides `logits`, `encode_prompts`,
    `decode_completion`, `mask_id` and `image_token_range`."""

    decodes = True  # completions come from a decoder (harness.sampling) with DecodeConfig settings

    def complete(self, task, examples, decode, *, n_samples: int = 1, seed: int = 0, batch_size: int = 64,
                 progress: bool = False, tag: str = "eval") -> tuple[list, list, int, int, float]:
        """(completions, owners, nfe, generated tokens, seconds) for every example x sample."""
        return _decoded_completions(self, task, examples, decode, n_samples=n_samples, seed=seed,
                                    batch_size=batch_size, progress=progress, tag=tag)


class DiffusionModel(DecodingModel):
    """The one narrow interface every masked diffusion model is used through."""


    def __init__(self, module: torch.nn.Module, tokenizer, *, name: str, mask_id: int, pad_id: int,
                 eos_id: int | None, family: str = "generic", image_token_range: tuple[int, int] | None = None,
                 stop_ids: set[int] | None = None):
        self.module = module
        self.tokenizer = tokenizer
        self.name = name
        self.mask_id = int(mask_id)
        self.pad_id = int(pad_id)
        self.eos_id = None if eos_id is None else int(eos_id)
        self.family = family  # generic | llada | dream | mmada: decides the forward's keyword arguments
        self.image_token_range = image_token_range  # [lo, hi) ids of the image codebook, multimodal only
        self.stop_ids = set(stop_ids or ()) | ({self.eos_id} if self.eos_id is not None else set())
        self._takes_position_ids = "position_ids" in _forward_params(module)
        self.chat: bool | None = None  # chat template: None = when the tokenizer has one (encode_prompts)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) ids -> (B, L, V) logits at every position (Dream's shift already undone).

        `attention_mask` (B, L): False/0 = padding, never attended. Without padding no mask is passed at
        all, so every family runs its plain full-attention path.
        """
        kwargs = self._forward_kwargs(attention_mask)
        out = self.module(input_ids=input_ids, **kwargs)
        logits = out.logits if hasattr(out, "logits") else out[0]  # (B, L, V)
        if self.family == "dream":
            # Dream's output at position i predicts token i+1; shifting right by one puts the prediction
            # for token i at position i. The first real token (never masked: it is prompt) keeps its own
            # row, at position 0 of an unpadded row and after the padding of a left-padded one.
            shifted = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
            if attention_mask is not None and not bool(attention_mask.bool().all()):
                first = attention_mask.to(device=logits.device).bool().long().argmax(dim=1)  # (B,)
                rows = torch.arange(logits.shape[0], device=logits.device)
                shifted[rows, first] = logits[rows, first]
            logits = shifted
        return logits

    def _forward_kwargs(self, attention_mask: torch.Tensor | None) -> dict:
        if attention_mask is None:
            return {}
        keep = attention_mask.to(device=self.device, dtype=torch.bool)  # (B, L)
        if bool(keep.all()):
            return {}
        positions = (keep.long().cumsum(-1) - 1).clamp_min(0)  # (B, L): 0 at the first real token
        pair = (keep[:, None, :, None] & keep[:, None, None, :])  # (B, 1, L, L)
        if self.family == "dream":
            return {"attention_mask": pair, "position_ids": positions}
        if self.family == "mmada":
            return {"attention_bias": pair}
        if self.family == "llada":
            # never LLaDA's 2-D attention_mask: its code adds it to a causal bias (module docstring)
            return {"attention_bias": pair}
        kwargs = {"attention_mask": keep.long()}
        if self._takes_position_ids:
            kwargs["position_ids"] = positions
        return kwargs

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def encode_prompts(self, prompts: list[str], chat: bool | None = None,
                       special_tokens: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prompt ids (B, P) and attention mask (B, P) bool.

        `chat` (default: the model's `chat` setting, itself None = automatic): True wraps each prompt as
        one user turn followed by the assistant header (the tokenizer's chat template: instruct models);
        False gives the raw text with the tokenizer's own special tokens (base models, few-shot prompts,
        text an outside tool already rendered); None uses the template when the tokenizer has one.
        `special_tokens=False` adds none of the tokenizer's own (for text that already holds them).
        """
        tok = self.tokenizer
        chat = self.chat if chat is None else chat
        if chat and not self.has_chat_template:
            raise ModelError(f"{self.name}: its tokenizer has no chat template; pass --chat-template off")
        if chat is None:
            chat = self.has_chat_template
        if chat:
            texts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                             tokenize=False) for p in prompts]
            rows = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        else:
            rows = [tok(p, add_special_tokens=special_tokens)["input_ids"] for p in prompts]
        P = max((len(r) for r in rows), default=0)
        ids = torch.full((len(rows), P), self.pad_id, dtype=torch.long)  # (B, P)
        mask = torch.zeros((len(rows), P), dtype=torch.bool)  # (B, P)
        for i, r in enumerate(rows):
            if r:
                ids[i, P - len(r):] = torch.tensor(r, dtype=torch.long)
                mask[i, P - len(r):] = True
        return ids.to(self.device), mask.to(self.device)

    def decode_completion(self, ids: torch.Tensor) -> str:
        """(L,) completion ids -> text, cut at the first stop token (EOS), masks and pads dropped."""
        out = []
        for t in ids.tolist():
            if t in self.stop_ids:
                break
            if t not in (self.mask_id, self.pad_id):
                out.append(t)
        return self.tokenizer.decode(out, skip_special_tokens=True)

    def __repr__(self) -> str:
        return f"DiffusionModel({self.name!r}, family={self.family}, mask_id={self.mask_id})"


def load_model(spec: str, task: str | None = None, device: str = "cpu", dtype: str = "auto"):
    """`gold`, `tiny` (needs `task`), `hf:<hub-id-or-local-folder>` or a preset name -> a model."""
    if spec == "gold":
        return GoldModel()
    if spec == "tiny":
        if not task:
            raise ModelError("the `tiny` model is pretrained per task: pass a task (harness eval --task arith)")
        path = tiny_model_path(task)
        if not is_pretrained(task):
            raise ModelError(f"no tiny model cached for task {task!r} at {path}; "
                             f"build it with `harness pretrain --task {task}`")
        return load_hf(str(path), device=device, dtype=dtype, name=f"tiny-{task}")
    if spec in PRESETS:
        return load_hf(PRESETS[spec].removeprefix("hf:"), device=device, dtype=dtype, name=spec)
    if spec.startswith("hf:"):
        return load_hf(spec[3:], device=device, dtype=dtype, name=spec)
    from harness.registry import UnknownNameError

    raise UnknownNameError("model", spec, model_names())


def load_hf(target: str, *, device: str = "cpu", dtype: str = "auto", name: str | None = None,
            check_padding: bool = True) -> DiffusionModel:
    """Load a transformers masked diffusion model from a local folder or (only if not a folder) the hub."""
    import transformers

    import harness.grid_model  # noqa: F401 - registers the image tasks' tiny model class with AutoModelForMaskedLM

    folder = Path(target).expanduser()
    local = folder.is_dir()
    if not local and (target.startswith((".", "/", "~")) or target.count("/") > 1):
        raise ModelError(f"model folder not found: {target} (pass --model hf:/path/to/folder, a folder "
                         "holding config.json)")
    if local and (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
        return _load_adapter(folder, device=device, dtype=dtype, name=name or f"hf:{target}",
                             check_padding=check_padding)
    if local and not (folder / "config.json").is_file():
        raise ModelError(f"{folder} has no config.json: not a transformers model folder")
    source = str(folder) if local else target
    try:
        config = transformers.AutoConfig.from_pretrained(source, trust_remote_code=True)
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, trust_remote_code=True)
    except OSError as e:  # files that cannot be read or fetched (offline, unknown id, gated repo)
        if local:
            raise ModelError(f"could not load {folder}: {_first_line(e)}") from None
        raise ModelError(f"could not load {target!r} from the Hugging Face hub ({type(e).__name__}: "
                         f"{_first_line(e)[:160]}); download it and pass a local folder: "
                         "--model hf:/path/to/folder") from None
    except ValueError as e:  # read fine, but transformers does not know the architecture
        raise ModelError(f"{source}: {_first_line(e)[:200]} (a model that ships its code elsewhere, such as "
                         "MMaDA, needs its classes registered with AutoConfig.register / AutoModel.register)"
                         ) from None
    except Exception as e:  # noqa: BLE001 - the model's own code failed: one line, not its traceback
        raise ModelError(_code_failure(source, "its config or tokenizer", e)) from e

    family = _family(config)
    auto_map = getattr(config, "auto_map", None) or {}
    if "AutoModelForMaskedLM" in auto_map or (not auto_map and type(config) in
                                              transformers.MODEL_FOR_MASKED_LM_MAPPING):
        cls = transformers.AutoModelForMaskedLM
    else:
        cls = transformers.AutoModel
    torch_dtype = _resolve_dtype(dtype, device)
    try:
        module = cls.from_pretrained(source, trust_remote_code=True, **{_dtype_kwarg(): torch_dtype})
    except (OSError, ValueError) as e:
        where = str(folder) if local else repr(target)
        raise ModelError(f"could not load the weights of {where} with {cls.__name__}: {_first_line(e)[:200]}"
                         + ("" if local else "; pass a local folder: --model hf:/path/to/folder")) from None
    except Exception as e:  # noqa: BLE001 - e.g. upstream LLaDA/Dream code under transformers 5
        raise ModelError(_code_failure(source, f"the model ({cls.__name__})", e)) from e
    module.to(device)
    module.eval()

    mask_id = tokenizer.mask_token_id
    if mask_id is None:
        mask_id = getattr(config, "mask_token_id", None)
    if mask_id is None and family in ("llada", "mmada"):
        mask_id = LLADA_MASK_ID
    if mask_id is None:
        raise ModelError(f"{source}: no mask token (neither the tokenizer nor config.mask_token_id names one); "
                         "is this a masked diffusion model?")
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = eos_id if eos_id is not None else mask_id
    vocab = tokenizer.get_vocab()
    stop_ids = {vocab[t] for t in _STOP_TOKENS if t in vocab}
    image_range = _image_token_range(config, tokenizer, family)
    model = DiffusionModel(module, tokenizer, name=name or f"hf:{target}", mask_id=mask_id, pad_id=pad_id,
                           eos_id=eos_id, family=family, image_token_range=image_range, stop_ids=stop_ids)
    model.source = source  # where the weights came from (an exported adapter names it as its base)
    if check_padding:
        error = padding_error(model)
        if error is not None:
            raise ModelError(f"{model.name}: {error}")
    return model


def _load_adapter(folder: Path, *, device: str, dtype: str, name: str, check_padding: bool) -> DiffusionModel:
    """An exported LoRA policy (harness/export.py, or any peft adapter folder): its base, then the adapter."""
    from harness.lora import LoraError, adapter_base, attach_adapter

    try:
        base = adapter_base(folder)
    except LoraError as e:
        raise ModelError(str(e)) from None
    model = load_hf(base, device=device, dtype=dtype, name=name, check_padding=False)
    try:
        attach_adapter(model, folder)
    except Exception as e:  # noqa: BLE001 - peft's own errors: one line naming the folder
        raise ModelError(f"could not load the adapter in {folder} onto {base}: {type(e).__name__}: "
                         f"{_first_line(e)[:200]}") from None
    model.module.to(device)
    model.source = str(folder)
    model.adapter_base = base
    if check_padding:
        error = padding_error(model)
        if error is not None:
            raise ModelError(f"{model.name}: {error}")
    return model


PADDING_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-6, torch.bfloat16: 3e-2, torch.float16: 5e-3}


def _decoded_completions(model, task, examples, decode, *, n_samples: int = 1, seed: int = 0, batch_size: int = 64,
                         progress: bool = False, tag: str = "eval"):
    """Completions for every (example, sample) pair, in example-major order.

    Returns (completions, owners, nfe, generated_tokens, seconds) where owners[i] is the Example of
    completions[i]. Each row's seed is derived from (seed, tag, example id, sample index), so a
    completion does not depend on batch size or on which other examples are evaluated.
    """
    from harness.sampling import generate

    pairs = [(ex, s) for ex in examples for s in range(n_samples)]
    completions: list[str] = []
    nfe = tokens = 0
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pairs), desc=f"{tag} {task.name}", unit="sample", leave=False)
    token_range = model.image_token_range if task.kind == "image" else None
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i:i + batch_size]
        ids, attn = model.encode_prompts([task.format_prompt(ex) for ex, _ in chunk])
        seeds = [derive_seed(seed, tag, ex.id, s) for ex, s in chunk]
        out = generate(model, ids, attn, decode, seeds=seeds, token_range=token_range)
        nfe += out.nfe
        comp = out.completion_ids
        tokens += comp.numel()
        completions.extend(model.decode_completion(row) for row in comp)
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return completions, [ex for ex, _ in pairs], nfe, tokens, time.perf_counter() - t0


def padding_error(model: DiffusionModel, pad: int = 3) -> str | None:
    """None when a row's logits are the same alone and left-padded by `pad` inside a batch, else why not.

    Two forwards over a dozen tokens: row 0 is a prompt plus four mask tokens (a completion being
    decoded), row 1 the same shortened by `pad` tokens and left-padded back to the batch length. Each
    row's real positions must match the row decoded alone within PADDING_TOLERANCE (absolute in float32;
    for bf16/fp16 relative to the largest logit, since those kernels round differently per batch shape).
    """
    tok = model.tokenizer
    text = "Natalia sold clips to 48 of her friends in April, and then she sold half as many in May."
    ids = [i for i in tok(text, add_special_tokens=False)["input_ids"] if i not in (model.mask_id, model.pad_id)]
    ids = ids[:12]
    if len(ids) < pad + 2:
        ids = (ids * 8)[:12]
    if len(ids) < pad + 2:
        return None  # a tokenizer that cannot encode plain text: nothing to probe with
    long_row = ids + [model.mask_id] * 4
    short_row = ids[:-pad] + [model.mask_id] * 4
    n = len(long_row)
    batch = torch.tensor([long_row, [model.pad_id] * pad + short_row], device=model.device)  # (2, n)
    keep = torch.ones(2, n, dtype=torch.bool, device=model.device)  # (2, n)
    keep[1, :pad] = False
    with torch.no_grad():
        both = model.logits(batch, keep).float()  # (2, n, V)
        alone_long = model.logits(batch[:1]).float()  # (1, n, V)
        alone_short = model.logits(batch[1:, pad:]).float()  # (1, n - pad, V)
    diff = max((both[0] - alone_long[0]).abs().max().item(), (both[1, pad:] - alone_short[0]).abs().max().item())
    dtype = next(model.module.parameters()).dtype
    tol = PADDING_TOLERANCE.get(dtype, 1e-4)
    if dtype in (torch.bfloat16, torch.float16):
        tol *= max(1.0, alone_long.abs().max().item())
    if not diff <= tol:  # also catches NaN
        return (f"a prompt left-padded by {pad} tokens gets logits {diff:.3g} away from the same prompt alone "
                f"(tolerance {tol:.1g}, dtype {str(dtype).removeprefix('torch.')}): this model's code does not "
                f"take the padding mask of family {model.family!r} the way the harness passes it (see "
                "harness/models.py), so every batched decode and RL rollout would be silently wrong; "
                "the model is refused")
    return None


def _code_failure(source: str, what: str, e: BaseException) -> str:
    import transformers

    msg = f"could not load {what} of {source}: {type(e).__name__}: {_first_line(e)[:200]}"
    if int(transformers.__version__.split(".")[0]) >= 5:
        msg += (f"; the upstream LLaDA/Dream code runs under transformers 4.46-4.57, not "
                f"{transformers.__version__}: pip install 'transformers>=4.46,<5'")
    else:
        msg += "; check that the folder's modeling code matches its config (HARNESS_DEBUG=1 shows the traceback)"
    return msg


def _family(config) -> str:
    kind = str(getattr(config, "model_type", "")).lower()
    for family in ("mmada", "dream", "llada"):
        if family in kind:
            return family
    return "generic"


def _image_token_range(config, tokenizer, family: str) -> tuple[int, int] | None:
    """[lo, hi) ids of the image codebook: a config's explicit `image_token_range`, else MMaDA's layout
    (codebook right after the text vocabulary), else None (a text-only model)."""
    explicit = getattr(config, "image_token_range", None)
    if explicit:
        lo, hi = explicit
        return int(lo), int(hi)
    if family == "mmada":
        lo = len(tokenizer)
        return lo, lo + int(getattr(config, "codebook_size", MMADA_CODEBOOK_SIZE))
    return None


def _resolve_dtype(dtype: str | torch.dtype, device: str) -> torch.dtype:
    """`auto`: bf16 on a GPU (how the 8B models are published and run), fp32 on CPU (CPU bf16 matmuls
    are slow without AMX and the tiny model is small); else bf16 / fp16 / fp32 by name."""
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
             "half": torch.float16, "fp32": torch.float32, "float32": torch.float32, "float": torch.float32}
    if dtype == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if dtype not in names:
        raise ModelError(f"unknown dtype {dtype!r}; choose auto, bf16, fp16 or fp32")
    return names[dtype]


def _dtype_kwarg() -> str:
    """transformers renamed `torch_dtype` to `dtype` in 4.56; older releases hand unknown kwargs to the model."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def _forward_params(module: torch.nn.Module) -> set[str]:
    try:
        return set(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError):
        return set()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
