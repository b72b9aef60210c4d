"""volkd.errors: the one wording of pydantic validation errors and the shared field validators."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from volkd.errors import at_least, describe_validation_error, listed_once, one_of


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = 1
    colour: str | None = None

    _size = field_validator("size")(at_least(1, " (a count)"))
    _colour = field_validator("colour")(one_of("colour", ("red", "blue")))


class _Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    inner: _Inner = _Inner()
    items: list[_Inner] = []
    tags: list[str] = []

    _tags = field_validator("tags")(one_of("tag", ("a", "b")))
    _tags_once = field_validator("tags")(listed_once("tag"))


def _message(data: dict, **kw) -> str:
    with pytest.raises(ValidationError) as e:
        _Outer.model_validate(data)
    return describe_validation_error(e.value, _Outer, **kw)


def test_every_error_is_named_by_its_location_and_joined() -> None:
    msg = _message({"inner": {"size": 0, "colour": "green"}})
    assert msg == ("field 'name': required but missing; "
                   "field 'inner.size': must be ≥ 1 (a count), got 0; "
                   "field 'inner.colour': unknown colour 'green'; choose one of red, blue")


def test_unknown_key_lists_the_keys_allowed_at_its_place() -> None:
    assert _message({"name": "x", "colur": 1}) == "unknown field 'colur'; allowed fields: name, inner, items, tags"
    assert _message({"name": "x", "items": [{}, {"sise": 2}]}, noun="key") == (
        "unknown key 'items.1.sise'; allowed keys under 'items.1': size, colour")


def test_builtin_messages_get_the_value_and_prefix_applies() -> None:
    msg = _message({"name": "x", "inner": {"size": "many"}}, noun="key", prefix="study.")
    assert msg == "key 'study.inner.size': Input should be a valid integer, unable to parse string as an integer (got 'many')"
    long = _message({"name": ["y" * 200]})
    assert long.startswith("field 'name': Input should be a valid string (got ['yyy") and long.endswith("…)")
    assert len(long) < 140


def test_list_validators() -> None:
    assert "unknown tag 'c'; choose one of a, b" in _message({"name": "x", "tags": ["a", "c"]})
    assert "field 'tags': tag listed twice: ['a']" in _message({"name": "x", "tags": ["a", "b", "a"]})
    assert _Outer(name="x", tags=["a", "b"], inner={"colour": None}).tags == ["a", "b"]
    assert listed_once("cohort", key=len)(["ab", "c"]) == ["ab", "c"]
    with pytest.raises(ValueError, match=r"cohort listed twice: \[2\]"):
        listed_once("cohort", key=len)(["ab", "cd"])
