"""The formula parser: exact values, strict grammar, bounded input."""

from fractions import Fraction

import pytest

from envs.general_points.formula import MAX_FORMULA_TOKENS, FormulaError, parse_formula


@pytest.mark.parametrize(
    "text, numbers, value",
    [
        ("8/(3-8/3)", (8, 3, 8, 3), Fraction(24)),
        ("(1+2)*8 = 24", (1, 2, 8), Fraction(24)),
        (" ( 10 - 4 ) * ( 2 + 2 ) ", (10, 4, 2, 2), Fraction(24)),
        ("12-4-2", (12, 4, 2), Fraction(6)),  # left-associative
        ("12/4/3", (12, 4, 3), Fraction(1)),
        ("2+3*4", (2, 3, 4), Fraction(14)),  # precedence
        ("((((7))))", (7,), Fraction(7)),
        ("1/3+1/3", (1, 3, 1, 3), Fraction(2, 3)),
        ("007", (7,), Fraction(7)),
    ],
)
def test_legal_formulas_evaluate_exactly(text, numbers, value):
    parsed = parse_formula(text)
    assert parsed.numbers == numbers and parsed.value == value


@pytest.mark.parametrize("text", ["4/(2-2)", "1/0", "(3-3)/(8-8)", "5/(1-1)*0"])
def test_division_by_zero_gives_no_value(text):
    assert parse_formula(text).value is None


@pytest.mark.parametrize(
    "text",
    ["", "   ", "2**3", "8//3", "2^3", "3x8", "3 * x", "-3+27", "3*-8", "1.5*16", "2(12)", "(2)(12)", "3 8",
     "(1+2", "1+2)", "1+", "*3", "24=", "= 24", "1=2=3", "sqrt(576)", "３*8", "٣*8", "1e3", "(", "()"],
)  # fmt: skip
def test_illegal_formulas_raise_formula_error(text):
    with pytest.raises(FormulaError):
        parse_formula(text)


def test_input_bounds_are_enforced_before_parsing():
    with pytest.raises(FormulaError, match="longer than"):
        parse_formula("1+" * 200 + "1")
    with pytest.raises(FormulaError, match="tokens"):
        parse_formula("+".join(["1"] * (MAX_FORMULA_TOKENS // 2 + 1)))
    assert parse_formula("+".join(["1"] * (MAX_FORMULA_TOKENS // 2))).value == MAX_FORMULA_TOKENS // 2


def test_deep_parentheses_are_bounded_not_a_recursion_error():
    with pytest.raises(FormulaError):
        parse_formula("(" * 5000 + "1" + ")" * 5000)


def test_huge_numbers_are_exact():
    parsed = parse_formula("9" * 60 + "-" + "9" * 60 + "+24")
    assert parsed.value == 24


def test_error_messages_are_ascii_even_for_unicode_input():
    with pytest.raises(FormulaError) as caught:
        parse_formula("3×8")
    assert str(caught.value).isascii()
