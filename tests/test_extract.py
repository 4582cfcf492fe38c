"""Extraction helpers (tasks/extract.py) and the GSM8K strict/flexible answer rules, with hand-written
cases in both directions."""

from fractions import Fraction

import pytest

from tasks.extract import (
    canonical_number,
    extract_code,
    last_boxed,
    last_number,
    numbers_equal,
    parse_number,
)
from tasks.gsm8k import flexible_answer, has_format, strict_answer


# ---- boxed --------------------------------------------------------------------------------------
def test_last_boxed_takes_the_last_box():
    assert last_boxed(r"first \boxed{1} then \boxed{2}.") == "2"


def test_last_boxed_keeps_nested_braces():
    assert last_boxed(r"so \boxed{\frac{1}{\sqrt{2}}} done") == r"\frac{1}{\sqrt{2}}"
    assert last_boxed(r"\boxed{\left( 3, \frac{\pi}{2} \right)}") == r"\left( 3, \frac{\pi}{2} \right)"


def test_last_boxed_ignores_an_unclosed_box_from_a_truncated_generation():
    assert last_boxed(r"\boxed{7} and then \boxed{\frac{1}{2}") == "7"
    assert last_boxed(r"\boxed{\frac{1}{2}") is None


def test_last_boxed_falls_back_to_fbox_only_without_boxed():
    assert last_boxed(r"\fbox{3}") == "3"
    assert last_boxed(r"\boxed{1} \fbox{2}") == "1"


def test_last_boxed_returns_none_without_a_box():
    assert last_boxed("the answer is 5") is None


# ---- numbers ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, expected",
    [
        ("1,234", "1234"),  # thousands separators
        ("$18", "18"),  # currency
        ("\\$18.00", "18"),  # escaped dollar, trailing zeros
        ("18.", "18"),  # sentence-final full stop
        ("18.00", "18"),
        ("-3", "-3"),
        ("−3", "-3"),  # unicode minus
        ("{-3}", "-3"),
        ("2.50", "2.5"),
        ("3/4", "0.75"),
        ("\\frac{3}{4}", "0.75"),
        ("-\\dfrac{1}{3}", "-1/3"),  # not a finite decimal: kept as a fraction
        ("1\\,000", "1000"),  # LaTeX thin space as a thousands separator
        ("18 \\text{ dollars}", "18"),
        ("50\\%", "50"),
        ("90^\\circ", "90"),
    ],
)
def test_canonical_number_normalises_written_forms(text, expected):
    assert canonical_number(text) == expected


@pytest.mark.parametrize("text", ["abc", "5 6", "1,23", "", "x=5", "1/0"])
def test_canonical_number_rejects_what_is_not_one_number(text):
    assert canonical_number(text) is None


def test_numbers_compare_exactly_not_with_a_float_tolerance():
    assert numbers_equal("18.00", "18")
    assert numbers_equal("$1,234", "1234")
    assert numbers_equal("0.5", "1/2")
    assert not numbers_equal("18.0001", "18")
    assert not numbers_equal("-18", "18")
    assert not numbers_equal("0.3333333333", "1/3")
    assert not numbers_equal(None, "18")
    assert parse_number("0.1") == Fraction(1, 10)  # exact, no binary rounding


def test_last_number_reads_thousands_and_ignores_hyphen_as_minus_after_a_word():
    assert last_number("She makes 9 * 2 = $1,800.") == "1800"
    assert last_number("16-3-4=9 and then 16-3") == "3"  # "-3" here is a subtraction, not negative
    assert last_number("the temperature fell to -5 degrees") == "-5"
    assert last_number("3,4") == "4"  # a list, not 34
    assert last_number("no digits") is None


# ---- GSM8K strict / flexible --------------------------------------------------------------------
def test_strict_reads_the_number_after_hash_marks():
    assert strict_answer("so she makes 18 dollars.\n#### 18") == "18"
    assert strict_answer("#### $1,234.00") == "1234"
    assert strict_answer("#### -10") == "-10"


def test_strict_prefers_the_last_box_over_hash_marks():
    assert strict_answer("#### 5\n\\boxed{6}") == "6"


def test_strict_reads_a_number_inside_a_box_with_words():
    assert strict_answer("\\boxed{18 \\text{ eggs}}") == "18"
    assert strict_answer("\\boxed{x = 5}") == "5"


def test_strict_rejects_answer_without_hash_or_box():
    assert strict_answer("The answer is 18.") is None


def test_flexible_falls_back_to_the_last_number():
    assert flexible_answer("The answer is 18.") == "18"
    assert flexible_answer("first 3 then 4,000 dollars") == "4000"
    assert flexible_answer("\\boxed{7} although 9 was close") == "7"  # strict wins when present
    assert flexible_answer("no number at all") is None


def test_format_needs_reasoning_then_answer_tags():
    assert has_format("<reasoning>\nx\n</reasoning>\n<answer>\n\\boxed{1}\n</answer>")
    assert has_format("<reasoning>x</reasoning><answer>1</answer> trailing")
    assert not has_format("<answer>1</answer><reasoning>x</reasoning>")  # wrong order
    assert not has_format("<reasoning>x</reasoning>")
    assert not has_format("<reasoning>x<answer>1</answer>")  # reasoning never closed


# ---- code ---------------------------------------------------------------------------------------
def test_extract_code_takes_the_first_python_fenced_block():
    text = "Here:\n```python\ndef f():\n    return 1\n```\nand usage\n```python\nprint(f())\n```"
    assert extract_code(text) == "def f():\n    return 1"


def test_extract_code_accepts_an_unlabelled_fence_and_skips_other_languages():
    assert extract_code("```bash\npip x\n```\n```\nx = 1\n```") == "x = 1"
    assert extract_code("```text\nonly prose\n```") == ""


def test_extract_code_takes_an_unclosed_fence_to_the_end():
    assert extract_code("```python\ndef f():\n    return 1\n") == "def f():\n    return 1"


def test_extract_code_keeps_plain_code_and_its_indentation():
    body = "    return a + b\n"
    assert extract_code(body) == "    return a + b"
    assert extract_code("\n\ndef f():\n    pass\n\n") == "def f():\n    pass"
