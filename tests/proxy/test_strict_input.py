"""Strict input: what two parsers could read two ways, or a log line could be broken by, is a 400.

- A JSON body with a key twice in one object (at any depth): orjson keeps the last value, the
  raw bytes go upstream, where another parser may keep the first.
- A control character in a name the gateway reads (``model``, ``service_tier``,
  ``previous_response_id``): refused before pricing, routing or forwarding, naming the field.
- A budget's fields held to the same rules whether it comes from the YAML or the admin API.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import ConfigErrors, InvalidRequest
from gateway.proxy.resolve import IDENTIFIERS, parse_body
from gateway.settings.load import parse_settings
from tests.proxy.conftest import KEYS, Harness, MakeHarness, sha
from tests.proxy.test_hostile_input import assert_metered, assert_refused

CHAT = {"model": "gpt-4o-2024-08-06", "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}]}
AUTH = {"Authorization": f"Bearer {KEYS['other']}", "Content-Type": "application/json"}


async def post_raw(gw: Harness, raw: bytes, path: str = "/v1/chat/completions") -> Any:
    return await gw.client.post(path, data=raw, headers=AUTH)


# -- duplicate keys --------------------------------------------------------------------------

DUPLICATES = {
    "top level": b'{"model":"gpt-4o-2024-08-06","max_tokens":1,"max_tokens":100000,'
                 b'"messages":[{"role":"user","content":"hi"}]}',
    "top level, spaced": b'{"model": "gpt-4o-2024-08-06", "max_tokens": 1, "max_tokens": 100000,'
                         b' "messages": [{"role": "user", "content": "hi"}]}',
    "one spelt with an escape": b'{"model":"gpt-4o-2024-08-06","max_tokens":1,'
                                b'"max\\u005ftokens":100000,"messages":[]}',
    "in a message": b'{"model":"gpt-4o-2024-08-06","max_tokens":1,"messages":[{"role":"user",'
                    b'"content":"' + b"x" * 1000 + b'","content":"hi"}]}',
    "in stream_options": b'{"model":"gpt-4o-2024-08-06","max_tokens":1,"stream":true,'
                         b'"stream_options":{"include_usage":true,"include_usage":false},'
                         b'"messages":[]}',
    "hidden by an escaped colon": b'{"model":"gpt-4o-2024-08-06","max_tokens":1,"max_tokens":9,'
                                  b'"user":"a\\u003a","messages":[]}',
}


@pytest.mark.parametrize("raw", DUPLICATES.values(), ids=DUPLICATES.keys())
async def test_a_key_twice_in_one_object_is_refused(gateway: MakeHarness, raw: bytes) -> None:
    gw = await gateway()
    error = await assert_refused(gw, await post_raw(gw, raw), 400)
    assert "more than once" in error["message"]
    await assert_metered(gw)


NOT_DUPLICATES = {
    "the same key in two objects": b'{"model":"gpt-4o-2024-08-06","max_tokens":1,"messages":'
                                   b'[{"role":"user","content":"a"},{"role":"user",'
                                   b'"content":"b"}]}',
    "a key's name as a value": b'{"model":"gpt-4o-2024-08-06","max_tokens":1,"messages":'
                               b'[{"role":"user","content":[{"type":"text","text":"text"}]}]}',
    "pretty, with colons in the text": json.dumps(
        {**CHAT, "messages": [{"role": "user", "content": 'a: "b": c::'}]}, indent=2).encode(),
    "an escaped colon": b'{"model":"gpt-4o-2024-08-06","max_tokens":1,'
                        b'"messages":[{"role":"user","content":"\\u003a"}]}',
}


@pytest.mark.parametrize("raw", NOT_DUPLICATES.values(), ids=NOT_DUPLICATES.keys())
async def test_bodies_without_duplicates_go_through(gateway: MakeHarness, raw: bytes) -> None:
    gw = await gateway()
    resp = await post_raw(gw, raw)
    assert resp.status == 200, await resp.text()
    seen = gw.stats.last_request
    assert seen is not None and seen["body"]["messages"] == orjson.loads(raw)["messages"]
    await assert_metered(gw)


async def test_the_admin_api_refuses_duplicate_keys_too(gateway: MakeHarness) -> None:
    gw = await gateway()
    raw = b'{"name":"cap","max_cost_per_day":100,"max_cost_per_day":1}'
    headers = {"Authorization": f"Bearer {KEYS['admin']}", "Content-Type": "application/json"}
    resp = await gw.client.post("/api/client/v1/budgets", data=raw, headers=headers)
    assert resp.status == 400
    assert "more than once" in (await resp.json())["error"]["message"]


# Any JSON value, and each object written as a list of pairs, so a duplicate can be planted.
KEYS_ST = st.text(alphabet=st.sampled_from('abc:" \\\n\u00e9'), max_size=4)
LEAVES = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(
    alphabet=st.sampled_from('ab:" \\\n\u00e9\u2028'), max_size=6)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(KEYS_ST, inner, max_size=4).map(lambda d: ("obj", list(d.items()))),
    max_leaves=12,
)


def encode_string(text: str, escape: set[str]) -> str:
    """A JSON string, with the characters in ``escape`` written as ``\\uXXXX``."""
    plain = json.dumps(text, ensure_ascii=False)[1:-1]
    if not escape:
        return f'"{plain}"'
    out = "".join(f"\\u{ord(c):04x}" if c in escape else json.dumps(c, ensure_ascii=False)[1:-1]
                  for c in text)
    return f'"{out}"'


def encode(value: Any, style: dict[str, Any]) -> str:
    if isinstance(value, tuple):  # ("obj", pairs)
        items = [f"{encode_string(k, style['escape'])}{style['colon']}{encode(v, style)}"
                 for k, v in value[1]]
        return "{" + style["comma"].join(items) + "}"
    if isinstance(value, list):
        return "[" + style["comma"].join(encode(v, style) for v in value) + "]"
    if isinstance(value, str):
        return encode_string(value, style["escape"])
    return json.dumps(value)


def objects_of(value: Any) -> list[list[tuple[str, Any]]]:
    """Every object's pairs, outermost first."""
    if isinstance(value, tuple):
        found = [value[1]]
        for _, v in value[1]:
            found += objects_of(v)
        return found
    if isinstance(value, list):
        return [pairs for v in value for pairs in objects_of(v)]
    return []


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    top=st.dictionaries(KEYS_ST, VALUES, max_size=5),
    plant=st.booleans(),
    where=st.integers(0, 1000),
    value=LEAVES,
    colon=st.sampled_from([":", ": ", " : "]),
    comma=st.sampled_from([",", ", "]),
    escape=st.sets(st.sampled_from(':ab"\u00e9')),
)
def test_a_planted_duplicate_is_always_found_and_nothing_else_is(
    top: dict[str, Any], plant: bool, where: int, value: Any, colon: str, comma: str,
    escape: set[str]
) -> None:
    """Whatever the spacing and whichever characters are escaped (colons and key letters
    included), parse_body refuses a body exactly when one of its objects has a key twice."""
    root = ("obj", list(top.items()))
    objects = [pairs for pairs in objects_of(root) if pairs]
    if plant and objects:
        pairs = objects[where % len(objects)]
        pairs.insert(where % (len(pairs) + 1), (pairs[where % len(pairs)][0], value))
    raw = encode(root, {"colon": colon, "comma": comma, "escape": escape}).encode()
    planted = plant and bool(objects)
    if planted:
        with pytest.raises(InvalidRequest, match="more than once"):
            parse_body(raw)
    else:
        assert parse_body(raw) == json.loads(raw)


# -- control characters in identifiers -------------------------------------------------------

CONTROL = {
    "CR": "\r", "LF": "\n", "NUL": "\x00", "ESC": "\x1b", "DEL": "\x7f", "NEL (C1)": "\x85",
    "U+2028": "\u2028", "U+2029": "\u2029", "RLO U+202E": "\u202e", "RLI U+2067": "\u2067",
    "LRM U+200E": "\u200e", "ALM U+061C": "\u061c", "zero width space": "\u200b",
}


@pytest.mark.parametrize("char", CONTROL.values(), ids=CONTROL.keys())
@pytest.mark.parametrize("field", IDENTIFIERS)
async def test_a_control_character_in_an_identifier_is_refused(
    gateway: MakeHarness, field: str, char: str
) -> None:
    """globex may use any model and ``gpt-4o-2024-*`` prices any such name: the 400 comes
    before pricing, names the field, and repeats nothing of the value."""
    gw = await gateway()
    body: dict[str, Any] = {"model": "gpt-4o-2024-08-06", "input": "hi",
                            "max_output_tokens": 16}
    body[field] = f"{body.get(field, 'resp_abc')}{char}x-evil"
    resp = await gw.post("/responses", body, key="other")
    error = await assert_refused(gw, resp, 400)
    assert error["param"] == field
    assert f"U+{ord(char):04X}" in error["message"]
    assert "x-evil" not in error["message"] and char not in error["message"]
    await assert_metered(gw)


async def test_printable_identifiers_pass(gateway: MakeHarness) -> None:
    gw = await gateway()
    resp = await gw.post("/chat/completions", {**CHAT, "service_tier": "default"}, key="other")
    assert resp.status == 200, await resp.text()


# -- budgets: the YAML and the admin API refuse the same things ------------------------------

LONG = "n" * 129  # limits.budget_name_max is 128
BAD_BUDGETS: dict[str, tuple[dict[str, Any], str, str]] = {
    # id: (fields, the field named, words of the message)
    "name too long": ({"name": LONG}, "name", "at most 128 characters"),
    "NUL in the name": ({"name": "a\x00b"}, "name", "U+0000"),
    "newline in the name": ({"name": "a\nb"}, "name", "U+000A"),
    "bidi override in the name": ({"name": "abc\u202egpj.exe"}, "name", "U+202E"),
    "unclosed bracket": ({"model": "[[[["}, "model", "never closed"),
    "unclosed after a class": ({"model": "gpt-[45]o-[mini"}, "model", "never closed"),
    "control character in the glob": ({"model": "gpt-4o\r*"}, "model", "U+000D"),
    "max_wait_s past the cap": ({"max_wait_s": 1.5e300}, "max_wait_s", "limits.max_wait_s"),
    "max_wait_s just past": ({"max_wait_s": 600.5}, "max_wait_s", "at most 600"),
}


def yaml_budget(fields: dict[str, Any]) -> str:
    budget = {"name": "b", "tenant": "acme", "max_cost_per_day": 1, **fields}
    return json.dumps(budget)  # JSON is YAML; its escapes are YAML's double-quoted escapes


@pytest.mark.parametrize(("fields", "field", "words"), BAD_BUDGETS.values(),
                         ids=BAD_BUDGETS.keys())
async def test_a_bad_budget_is_refused_alike_by_the_yaml_and_the_api(
    gateway: MakeHarness, fields: dict[str, Any], field: str, words: str
) -> None:
    text = f"""
upstreams:
  mock: {{base_url: "http://127.0.0.1:9/v1", api_key: k}}
tenants:
  acme:
    keys: [{{name: ci, sha256: "{sha(KEYS['ci'])}"}}]
budgets:
  - {yaml_budget(fields)}
"""
    with pytest.raises(ConfigErrors) as caught:
        parse_settings(text, "test.yaml", {})
    [yaml_error] = caught.value.errors
    assert yaml_error.field == f"budgets[0].{field}" and words in yaml_error.message
    assert yaml_error.line == 8

    gw = await gateway()
    resp = await gw.client.post("/api/client/v1/budgets", json={"max_cost_per_day": 1, **fields},
                                headers={"Authorization": f"Bearer {KEYS['admin']}"})
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["param"] == field and words in error["message"]
    assert error["message"].endswith(f"{yaml_error.message}.")
