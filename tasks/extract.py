"""Answer extraction helpers shared by the tasks: boxed answers, numbers and code blocks.

All functions are pure (text in, value out) and return None when there is nothing to extract.

* `last_boxed(text)`: content of the last `\\boxed{...}` (nested braces allowed), or `\\fbox{...}`.
* `parse_number(s)` / `canonical_number(s)`: a number written as `1,234`, `$18.00`, `-3`, `2.5`, `3/4` or
  `\\frac{3}{4}` -> an exact `Fraction` / a canonical string (`"1234"`, `"18"`, `"-3"`, `"5/2"`).
  Numbers are compared exactly (Fraction), never with a float tolerance, so `18.00 == 18` but
  `18.0001 != 18`.
* `last_number(text)` / `first_number(text)`: the last / first number token in free text.
* `extract_code(text)`: the code in a completion, fenced in markdown or plain.
"""

from __future__ import annotations

import re
from fractions import Fraction

# A number token: optional minus, digits with optional thousands groups (1,234,567) or plain digits,
# optional decimal part; or a bare decimal (.5). Thousands groups must be exactly 3 digits, so a list
# such as "3,4" is two numbers, not 34.
# A minus sign counts only when it does not follow a word character or a closing bracket, so the
# "-4" in "16-3-4=9" is read as 4.
NUMBER_RE = re.compile(r"(?:(?<![\w)\]])-)?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\d)|\.\d+)")
_FRAC_RE = re.compile(r"^(-?)\\[dt]?frac\{(-?[\d.]+)\}\{(-?[\d.]+)\}$")
_SLASH_RE = re.compile(r"^(-?[\d.]+)/(-?[\d.]+)$")

# Decorations stripped before a string is read as a number: currency, LaTeX spacing and escapes,
# percent and degree signs, a `\text{...}` unit (`18 \text{ dollars}` -> `18`).
_STRIP_RE = re.compile(r"\\text\{[^{}]*\}|\\mathrm\{[^{}]*\}|\\[$%,;!: ]|\^\\circ|\^\{\\circ\}|[$%°\s]")


def _matching_brace(text: str, open_idx: int) -> int | None:
    """Index of the `}` that closes the `{` at `open_idx`, or None when unbalanced."""
    depth = 0
    for i in range(open_idx, len(text)):
        c = text[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


def last_boxed(text: str, commands: tuple[str, ...] = ("\\boxed", "\\fbox")) -> str | None:
    """Content of the last `\\boxed{...}` in `text` (braces may nest), else of the last `\\fbox{...}`.

    `\\fbox` is only a fallback: a `\\boxed{}` anywhere wins. An unclosed box (a truncated generation)
    does not count. Returns the content stripped of surrounding whitespace.
    """
    for cmd in commands:
        start = text.rfind(cmd)
        while start != -1:
            j = start + len(cmd)
            while j < len(text) and text[j] == " ":
                j += 1
            if j < len(text) and text[j] == "{":
                end = _matching_brace(text, j)
                if end is not None:
                    return text[j + 1 : end].strip()
            start = text.rfind(cmd, 0, start)
    return None


def parse_number(s: str | None) -> Fraction | None:
    """The exact value of a string that is one number (after stripping `$`, `,`, `%`, units, a trailing
    `.`), or None. Accepts integers, decimals, `a/b` and `\\frac{a}{b}`."""
    if s is None:
        return None
    t = str(s).strip()
    if re.search(r"\d\s+\d", t):  # "5 6" is two numbers, not 56
        return None
    t = _STRIP_RE.sub("", t).replace("−", "-").rstrip(".")
    if t.startswith("{") and t.endswith("}"):
        t = t[1:-1]
    if re.fullmatch(r"-?(?:\d{1,3}(?:,\d{3})+)(?:\.\d+)?", t):
        t = t.replace(",", "")
    m = _FRAC_RE.match(t) or _SLASH_RE.match(t)
    try:
        if m and len(m.groups()) == 3:
            sign = -1 if m.group(1) else 1
            return sign * Fraction(m.group(2)) / Fraction(m.group(3))
        if m:
            return Fraction(m.group(1)) / Fraction(m.group(2))
        if re.fullmatch(r"-?(?:\d+(?:\.\d*)?|\.\d+)", t):
            return Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None
    return None


def format_number(x: Fraction) -> str:
    """Canonical text of an exact number: `18`, `-3`, `2.5` (finite decimals), else `a/b`."""
    if x.denominator == 1:
        return str(x.numerator)
    d = x.denominator
    while d % 2 == 0:
        d //= 2
    while d % 5 == 0:
        d //= 5
    if d == 1:  # a finite decimal, written exactly (no float rounding)
        digits = 0
        while (x * 10**digits).denominator != 1:
            digits += 1
        scaled = abs(x.numerator * 10**digits // x.denominator)
        sign = "-" if x < 0 else ""
        return f"{sign}{scaled // 10**digits}.{scaled % 10**digits:0{digits}d}"
    return f"{x.numerator}/{x.denominator}"


def canonical_number(s: str | None) -> str | None:
    """`parse_number` then `format_number`: `"1,234.00"` -> `"1234"`; None when `s` is not a number."""
    x = parse_number(s)
    return None if x is None else format_number(x)


def numbers_in(text: str) -> list[str]:
    """Every number token in free text, canonicalised (`"$1,200."` -> `["1200"]`)."""
    out = []
    for tok in NUMBER_RE.findall(text.replace("−", "-")):
        c = canonical_number(tok)
        if c is not None:
            out.append(c)
    return out


def last_number(text: str) -> str | None:
    """The last number token in `text`, canonicalised; None if there is none."""
    nums = numbers_in(text)
    return nums[-1] if nums else None


def first_number(text: str) -> str | None:
    nums = numbers_in(text)
    return nums[0] if nums else None


def numbers_equal(a: str | None, b: str | None) -> bool:
    """Exact numeric equality of two number strings; False when either is not a number."""
    x, y = parse_number(a), parse_number(b)
    return x is not None and y is not None and x == y


# ---- code ----------------------------------------------------------------------------------------
_FENCE_RE = re.compile(r"^[ \t]*```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:^[ \t]*```|\Z)", re.DOTALL | re.MULTILINE)
_PY_LABELS = {"", "python", "py", "python3"}


def extract_code(text: str) -> str:
    """The program in a completion.

    Rule: if the completion has a markdown fence (a line starting with three backticks), the code is
    the first fenced block labelled python/py/python3 or unlabelled (a block left unclosed by a truncated
    generation runs to the end of the text); blocks in other languages are skipped. Without a fence the
    whole completion is the code. Leading indentation is kept (a HumanEval continuation is an indented
    function body); blank lines around the code and trailing whitespace are dropped.
    Returns "" when a fence exists but holds no python block.
    """
    if "```" in text:
        for m in _FENCE_RE.finditer(text):
            if m.group(1).lower() in _PY_LABELS:
                return _trim(m.group(2))
        if _FENCE_RE.search(text):
            return ""
    return _trim(text)


def _trim(code: str) -> str:
    lines = code.rstrip().split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    return "\n".join(lines)
