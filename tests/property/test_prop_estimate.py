"""Property tests: input token counting never raises, never goes negative, and grows with the
conversation, on any Unicode text (lone surrogates, special-token text, emoji) in every
endpoint's request shapes."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.proxy.endpoints import Endpoint
from gateway.proxy.estimate import count_input_tokens

BOUNDED = settings(max_examples=60, deadline=None, derandomize=True)

# Exact (o200k, cl100k) and estimated (no offline vocabulary) counting, plus nonsense.
MODELS = st.sampled_from(["gpt-4o-mini", "gpt-4", "gpt-3.5-turbo", "text-embedding-3-small",
                          "claude-x", ""]) | st.integers() | st.none()
TEXT = st.text(max_size=40) | st.sampled_from(
    ["<|endoftext|>", "<|im_start|>user<|im_end|>", "\ud800", "a\udfffb", "👩‍👩‍👧‍👦🏳️‍🌈",
     "日本語のテキスト", "\x00\u200b\ufeff", " " * 50])
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | TEXT
ANY: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda c: st.lists(c, max_size=3)
    | st.dictionaries(st.sampled_from(["type", "text", "content", "role", "name", "image_url",
                                       "detail", "function", "arguments"]) | TEXT, c, max_size=4),
    max_leaves=12,
)
PART = st.fixed_dictionaries({"type": st.sampled_from(
    ["text", "input_text", "output_text", "refusal", "image_url", "input_image", "input_audio",
     "file", "input_file", "unknown"])}, optional={"text": TEXT, "refusal": TEXT,
                                                   "detail": st.sampled_from(["low", "high"]),
                                                   "image_url": ANY})
CONTENT = TEXT | st.lists(PART | TEXT | ANY, max_size=3) | ANY
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "tool", "developer"]) | TEXT},
    optional={"content": CONTENT, "name": TEXT, "tool_call_id": TEXT,
              "tool_calls": st.lists(st.fixed_dictionaries(
                  {"function": st.fixed_dictionaries({"name": TEXT, "arguments": TEXT})})
                  | ANY, max_size=2) | ANY,
              "function_call": ANY},
)
PROMPT = TEXT | st.lists(TEXT | st.integers() | st.lists(st.integers(), max_size=5),
                         max_size=4) | ANY
RESPONSE_ITEM = MESSAGE | st.fixed_dictionaries(
    {"type": st.sampled_from(["message", "function_call", "function_call_output",
                              "custom_tool_call", "custom_tool_call_output", "reasoning",
                              "other"]) | ANY},
    optional={"name": TEXT, "arguments": TEXT, "output": CONTENT, "input": TEXT,
              "summary": CONTENT, "content": CONTENT, "text": TEXT}) | ANY


def _bodies(endpoint: Endpoint) -> st.SearchStrategy[dict[str, Any]]:
    fields: dict[Endpoint, dict[str, st.SearchStrategy[Any]]] = {
        Endpoint.CHAT: {"messages": st.lists(MESSAGE | ANY, max_size=4) | ANY, "tools": ANY,
                        "functions": ANY, "response_format": ANY | st.fixed_dictionaries(
                            {"type": st.just("json_schema"), "json_schema": ANY})},
        Endpoint.COMPLETIONS: {"prompt": PROMPT, "suffix": TEXT | ANY},
        Endpoint.EMBEDDINGS: {"input": PROMPT},
        Endpoint.RESPONSES: {"input": TEXT | st.lists(RESPONSE_ITEM, max_size=4) | ANY,
                             "instructions": TEXT | ANY, "tools": ANY, "text": ANY},
    }
    return st.fixed_dictionaries({"model": MODELS}, optional=fields[endpoint])


@BOUNDED
@given(st.data(), st.sampled_from(list(Endpoint)))
def test_any_body_counts_without_raising(data: st.DataObject, endpoint: Endpoint) -> None:
    body = data.draw(_bodies(endpoint))
    tokens, exact = count_input_tokens(endpoint, body)
    assert isinstance(tokens, int)
    assert tokens >= 0
    assert isinstance(exact, bool)


@BOUNDED
@given(st.sampled_from(list(Endpoint)), MODELS, TEXT)
def test_any_text_in_the_main_field_counts(endpoint: Endpoint, model: Any, text: str) -> None:
    field = {Endpoint.CHAT: "messages", Endpoint.COMPLETIONS: "prompt",
             Endpoint.EMBEDDINGS: "input", Endpoint.RESPONSES: "input"}[endpoint]
    value: Any = [{"role": "user", "content": text}] if endpoint is Endpoint.CHAT else text
    tokens, _ = count_input_tokens(endpoint, {"model": model, field: value})
    assert tokens >= (1 if text.strip() else 0)


@BOUNDED
@given(MODELS, st.lists(MESSAGE, max_size=4), MESSAGE)
def test_appending_a_message_never_lowers_the_chat_count(
    model: Any, messages: list[dict[str, Any]], extra: dict[str, Any]
) -> None:
    before, _ = count_input_tokens(Endpoint.CHAT, {"model": model, "messages": messages})
    after, _ = count_input_tokens(Endpoint.CHAT, {"model": model, "messages": [*messages, extra]})
    assert after >= before + 3  # at least the per-message framing


@BOUNDED
@given(MODELS, st.lists(TEXT, max_size=4), TEXT)
def test_appending_an_input_never_lowers_the_embedding_count(
    model: Any, inputs: list[str], extra: str
) -> None:
    before, _ = count_input_tokens(Endpoint.EMBEDDINGS, {"model": model, "input": inputs})
    after, _ = count_input_tokens(Endpoint.EMBEDDINGS, {"model": model, "input": [*inputs, extra]})
    assert after >= before
