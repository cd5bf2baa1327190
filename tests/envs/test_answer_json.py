"""extract_answer: lenient on the wrapping, never raises, bounded."""

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from envs.answer_json import extract_answer


def test_plain_json():
    assert extract_answer('{"formula": "1+2", "cards": ["A", 10]}') == {"formula": "1+2", "cards": ["A", 10]}


def test_code_fence_single_quotes_trailing_commas_and_prose():
    text = "Here's my answer:\n```json\n{'cards': ['K', '5',], 'formula': \"(1+2)*8\",}\n```\nDone."
    assert extract_answer(text) == {"cards": ["K", "5"], "formula": "(1+2)*8"}


def test_python_literals_and_quotes_inside_strings():
    assert extract_answer("{'ok': True, 'x': None, 'say': 'it\\'s \"fine\"'}") == {
        "ok": True,
        "x": None,
        "say": 'it\'s "fine"',
    }


def test_first_parsable_dict_wins_and_keys_are_kept_as_written():
    assert extract_answer('{not json} then {"Formula": "1"} and {"formula": "2"}') == {"Formula": "1"}


def test_brace_inside_string_does_not_end_the_object():
    assert extract_answer('{"formula": "}{", "n": 1}') == {"formula": "}{", "n": 1}


def test_no_object_gives_none():
    for text in ["", "no json here", "{{{{", "}}}{", "[1, 2, 3]", '{"a": 1']:
        assert extract_answer(text) is None, text


def test_text_over_the_bound_is_not_scanned():
    body = '{"formula": "1+2"}'
    assert extract_answer(body + " " * 100, max_chars=len(body) + 100) == {"formula": "1+2"}
    assert extract_answer(body + " " * 101, max_chars=len(body) + 100) is None


def test_non_str_gives_none():
    assert extract_answer(b'{"a": 1}') is None  # type: ignore[arg-type]


def test_deep_nesting_does_not_raise():
    assert extract_answer("[" * 5000 + "{" * 3000 + "]" * 5000) is None
    assert extract_answer('{"a":' + "[" * 3000 + "]" * 3000 + "}") is None


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("{}[]'\",:\\ aT1") + ["é", "\n"]), max_size=400) | st.text(max_size=400))
def test_never_raises_on_any_text(text):
    result = extract_answer(text)
    assert result is None or isinstance(result, dict)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(string.ascii_letters, min_size=1, max_size=8), st.integers() | st.text(max_size=10)))
def test_round_trips_any_json_object_in_prose(obj):
    import json

    assert extract_answer(f"The answer is {json.dumps(obj)}.") == obj
