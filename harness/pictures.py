"""Contact sheets for image runs: prompts down the side, the reference and each stage's generation across.

    image_sheet(task, examples, {"before RL": base.scored, "after RL": final.scored}, "images.png")

`harness run` on an image task writes `images.png` into the run folder: the first `per_tag` test prompts
of every GenEval tag, each row showing the reference image, the base model's image and the trained
model's image (same prompt, same decoder seed), with a green (pass) or red (fail) frame from the task's
own verdict, so the change RL made can be seen and not only counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

PASS, FAIL, NONE = (40, 160, 60), (200, 40, 40), (150, 150, 150)


def image_sheet(task, examples: Sequence, columns: Mapping[str, Sequence], path: str | Path, *,
                per_tag: int = 2, tile: int = 96, text_width: int = 300) -> Path:
    """Write a PNG grid to `path` (atomically) and return it.

    examples: the evaluated examples (their `solution` is the reference image, if any); columns: title ->
    the Scored rows of one evaluation (first sample per id is shown); task.to_image(completion) -> PIL.
    """
    from PIL import Image, ImageDraw

    from harness.results import atomic_write_bytes

    by_col = {title: _first_by_id(rows) for title, rows in columns.items()}
    chosen, seen = [], {}
    for ex in examples:  # the first `per_tag` of each tag, in test order
        tag = (ex.meta or {}).get("tag", "")
        if seen.get(tag, 0) < per_tag:
            seen[tag] = seen.get(tag, 0) + 1
            chosen.append(ex)
    has_ref = any(ex.solution for ex in chosen)
    titles = (["reference"] if has_ref else []) + list(by_col)
    pad, head = 6, 22
    W = text_width + len(titles) * (tile + pad) + pad
    H = head + len(chosen) * (tile + pad) + pad
    sheet = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for j, title in enumerate(titles):
        draw.text((text_width + pad + j * (tile + pad), 5), title, fill=(0, 0, 0))
    for i, ex in enumerate(chosen):
        y = head + i * (tile + pad)
        tag = (ex.meta or {}).get("tag", "")
        draw.text((pad, y + 4), f"[{tag}]", fill=(90, 90, 90))
        for k, line in enumerate(_wrap(ex.prompt, text_width // 7)):
            draw.text((pad, y + 20 + 13 * k), line, fill=(0, 0, 0))
        cells = ([(ex.solution, True)] if has_ref else []) + \
                [(r.completion, r.verdict) if (r := by_col[t].get(str(ex.id))) else (None, None) for t in by_col]
        for j, (completion, verdict) in enumerate(cells):
            x = text_width + pad + j * (tile + pad)
            frame = PASS if verdict else FAIL if verdict is False else NONE
            draw.rectangle([x - 3, y - 3, x + tile + 2, y + tile + 2], outline=frame, width=3)
            img = task.to_image(completion) if completion is not None else None
            if img is not None:
                sheet.paste(img.convert("RGB").resize((tile, tile), Image.NEAREST), (x, y))
            else:
                draw.text((x + 8, y + tile // 2), "unreadable", fill=FAIL)
    import io

    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    out = Path(path)
    atomic_write_bytes(out, buf.getvalue())
    return out


def _first_by_id(rows: Sequence) -> dict:
    out: dict = {}
    for r in rows:
        out.setdefault(str(r.id), r)
    return out


def _wrap(text: str, width: int) -> list[str]:
    lines, cur = [], ""
    for word in text.split():
        if cur and len(cur) + 1 + len(word) > width:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}".strip()
    return [*lines, cur][:5]
