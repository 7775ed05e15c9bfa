"""The official openai SDK, sync and async, against a real gateway in front of the real mock
upstream: answers parse, usage is where the SDK expects it (and hidden where it did not ask),
errors map to the SDK's exception classes, and what the gateway charges is exactly what the
upstream reported.

Every test runs once per client kind (the ``kind`` fixture); the async client's calls are
awaited, the sync client's are not, and one test body serves both.
"""

from __future__ import annotations

import fnmatch
import inspect
from typing import Any

import openai
import pytest

from gateway.mock.shapes import text_of
from tests.e2e.stack import (
    HOURLY_LIMIT,
    NEVER_FITS_PER_HOUR,
    SCOPED_MODELS,
    MakeClient,
    Stack,
    Tokens,
)

CHAT_MODEL = "gpt-4o-mini"
EMBED_MODEL = "text-embedding-3-small"
MESSAGES = [{"role": "user", "content": "Say hello a few times, please."}]
MOCK_DIMENSIONS = 8  # what the mock answers when no ``dimensions`` is asked for
DEFAULT_OUTPUT = 64  # the config's default_max_output_tokens: the cap the gateway sets upstream
# for a request that sets none (the mock writes up to its cap, so such an answer is "incomplete")
HOUR_S = 3600


async def done(value: Any) -> Any:
    """The SDK's answer, whichever client made the call."""
    return await value if inspect.isawaitable(value) else value


async def drain(stream: Any) -> list[Any]:
    """Every chunk or event of a stream, sync or async; iterating to the end closes it."""
    if isinstance(stream, openai.AsyncStream):
        return [item async for item in stream]
    return list(stream)


def mock_vector(index: int = 0) -> list[float]:
    return [((index + j) % 8 + 1) / 8 for j in range(MOCK_DIMENSIONS)]


def is_equal(want: Tokens) -> Any:
    return lambda delta: delta == want


# -- chat completions ----------------------------------------------------------------------------


async def test_chat_completion_parses_with_usage(stack: Stack, sdk: MakeClient) -> None:
    before = stack.reported()
    raw = await done(sdk().chat.completions.with_raw_response.create(
        model=CHAT_MODEL, messages=MESSAGES, max_tokens=5
    ))
    answer = raw.parse()
    assert answer.choices[0].message.content == text_of(5)
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 5
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 5
    want = Tokens(answer.usage.prompt_tokens, answer.usage.completion_tokens)
    assert stack.reported_since(before, is_equal(want)) == want
    assert 0 <= float(raw.headers["x-budget-usage-ratio"]) < 1  # apps' budget is roomy
    assert raw.headers["x-request-id"]


async def test_chat_stream_hides_usage_the_client_did_not_ask_for(
    stack: Stack, sdk: MakeClient
) -> None:
    before = stack.reported()
    raw = await done(sdk().chat.completions.with_raw_response.create(
        model=CHAT_MODEL, messages=MESSAGES, max_tokens=6, stream=True
    ))
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert "x-budget-usage-ratio" in raw.headers
    chunks = await drain(raw.parse())
    assert chunks
    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks), "the usage-only chunk reached the client"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == text_of(6)
    assert chunks[-1].choices[0].finish_reason == "length"
    # The gateway asked the upstream for usage, and was told it.
    sent = stack.last_upstream_body()
    assert sent["stream_options"] == {"include_usage": True}
    delta = stack.reported_since(before, lambda d: d.output == 6)
    assert delta.output == 6
    assert delta.input > 0


async def test_chat_stream_with_include_usage_ends_with_usage(
    stack: Stack, sdk: MakeClient
) -> None:
    before = stack.reported()
    stream = await done(sdk().chat.completions.create(
        model=CHAT_MODEL, messages=MESSAGES, max_tokens=4, stream=True,
        stream_options={"include_usage": True},
    ))
    chunks = await drain(stream)
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 4
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == text_of(4)
    want = Tokens(last.usage.prompt_tokens, last.usage.completion_tokens)
    assert stack.reported_since(before, is_equal(want)) == want


# -- completions ---------------------------------------------------------------------------------


async def test_completion_parses_with_usage(stack: Stack, sdk: MakeClient) -> None:
    before = stack.reported()
    answer = await done(sdk().completions.create(
        model=CHAT_MODEL, prompt="Once upon a time", max_tokens=3
    ))
    assert answer.choices[0].text == text_of(3)
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 3
    want = Tokens(answer.usage.prompt_tokens, answer.usage.completion_tokens)
    assert stack.reported_since(before, is_equal(want)) == want


@pytest.mark.parametrize("include_usage", [False, True], ids=["usage-hidden", "usage-asked"])
async def test_completion_stream(stack: Stack, sdk: MakeClient, include_usage: bool) -> None:
    before = stack.reported()
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    stream = await done(sdk().completions.create(
        model=CHAT_MODEL, prompt="Once upon a time", max_tokens=5, stream=True, **options
    ))
    chunks = await drain(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == text_of(5)
    usages = [c.usage for c in chunks if c.usage is not None]
    delta = stack.reported_since(before, lambda d: d.output == 5)
    if not include_usage:
        assert usages == []
        assert all(c.choices for c in chunks), "the usage-only chunk reached the client"
        assert delta.output == 5
        return
    assert len(usages) == 1
    assert chunks[-1].usage is usages[0]
    assert Tokens(usages[0].prompt_tokens, usages[0].completion_tokens) == delta


# -- embeddings ----------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", [None, "float"], ids=["sdk-default-base64", "float"])
async def test_embeddings(stack: Stack, sdk: MakeClient, encoding: str | None) -> None:
    before = stack.reported()
    options = {} if encoding is None else {"encoding_format": encoding}
    answer = await done(sdk().embeddings.create(
        model=EMBED_MODEL, input=["first text", "second text"], **options
    ))
    assert stack.last_upstream_body()["encoding_format"] == (encoding or "base64")
    assert [item.index for item in answer.data] == [0, 1]
    for item in answer.data:
        # eighths are exact in float32, so the base64 path decodes to the very same numbers
        assert item.embedding == mock_vector(item.index)
    assert answer.usage.prompt_tokens > 0
    want = Tokens(answer.usage.prompt_tokens, 0)
    assert stack.reported_since(before, is_equal(want)) == want


# -- responses -----------------------------------------------------------------------------------


async def test_response_parses_with_usage(stack: Stack, sdk: MakeClient) -> None:
    before = stack.reported()
    answer = await done(sdk().responses.create(model=CHAT_MODEL, input="Say hello."))
    assert stack.last_upstream_body()["max_output_tokens"] == DEFAULT_OUTPUT  # told upstream
    assert answer.status == "incomplete"
    assert answer.output_text == text_of(DEFAULT_OUTPUT)
    assert answer.usage is not None
    assert answer.usage.output_tokens == DEFAULT_OUTPUT
    want = Tokens(answer.usage.input_tokens, answer.usage.output_tokens)
    assert stack.reported_since(before, is_equal(want)) == want


async def test_response_stream_completes_with_usage(stack: Stack, sdk: MakeClient) -> None:
    before = stack.reported()
    stream = await done(sdk().responses.create(model=CHAT_MODEL, input="Say hello.", stream=True))
    events = await drain(stream)
    kinds = [event.type for event in events]
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.incomplete"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == text_of(DEFAULT_OUTPUT)
    usage = events[-1].response.usage
    assert usage is not None
    assert usage.output_tokens == DEFAULT_OUTPUT
    want = Tokens(usage.input_tokens, usage.output_tokens)
    assert stack.reported_since(before, is_equal(want)) == want


# -- models --------------------------------------------------------------------------------------


async def test_models_lists_only_what_the_tenant_may_use(sdk: MakeClient) -> None:
    page = await done(sdk("scoped").models.list())
    ids = [model.id for model in page.data]
    assert CHAT_MODEL in ids
    assert EMBED_MODEL in ids
    assert "gpt-4o" not in ids  # priced, served by the upstream, but not on scoped's list
    strays = [m for m in ids if not any(fnmatch.fnmatchcase(m, p) for p in SCOPED_MODELS)]
    assert strays == []
    everything = await done(sdk("apps").models.list())
    assert "gpt-4o" in [model.id for model in everything.data]  # the allow-list made the cut


async def test_models_list_keeps_what_the_upstream_says_of_its_models(sdk: MakeClient) -> None:
    page = await done(sdk("apps").models.list())
    listed = {model.id: model for model in page.data}
    assert listed[CHAT_MODEL].owned_by == "mock-upstream"  # from the mock's own GET /models
    assert listed[CHAT_MODEL].object == "model"
    assert [model.id for model in page.data] == sorted(listed)


async def test_models_retrieve_answers_what_the_list_shows(sdk: MakeClient) -> None:
    client = sdk("scoped")
    listed = {model.id: model for model in (await done(client.models.list())).data}
    for name in (CHAT_MODEL, EMBED_MODEL):
        model = await done(client.models.retrieve(name))
        assert model == listed[name]


@pytest.mark.parametrize(("tenant", "model"), [
    ("scoped", "gpt-4o"),  # priced and served, not on scoped's allow-list
    ("apps", "e2e-model-nobody-priced"),
    ("apps", "org/no-such-model"),  # the SDK sends the slash as %2F
])
async def test_models_retrieve_of_a_model_the_tenant_may_not_use_is_not_found(
    stack: Stack, sdk: MakeClient, tenant: str, model: str
) -> None:
    upstream_before = stack.upstream_requests()
    with pytest.raises(openai.NotFoundError) as info:
        await done(sdk(tenant).models.retrieve(model))
    assert_openai_error(info.value, 404, "model_not_found")
    assert info.value.response.json()["error"]["message"] == (
        f"The model '{model}' does not exist or you do not have access to it."
    )
    assert stack.upstream_requests() == upstream_before


# -- errors --------------------------------------------------------------------------------------


def assert_openai_error(exc: openai.APIStatusError, status: int, code: str) -> None:
    assert exc.status_code == status
    error = exc.response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert error["code"] == code
    assert exc.code == code


async def test_unknown_key_is_authentication_error(stack: Stack, sdk: MakeClient) -> None:
    upstream_before = stack.upstream_requests()
    client = sdk(api_key="sk-e2e-nobody-knows-this-key-0000")
    with pytest.raises(openai.AuthenticationError) as info:
        await done(client.chat.completions.create(model=CHAT_MODEL, messages=MESSAGES))
    assert_openai_error(info.value, 401, "invalid_api_key")
    assert "nobody-knows" not in info.value.response.text  # the secret is not echoed back
    with pytest.raises(openai.AuthenticationError):
        await done(client.models.list())
    with pytest.raises(openai.AuthenticationError):
        await done(client.models.retrieve(CHAT_MODEL))
    assert stack.upstream_requests() == upstream_before


async def test_model_not_allowed_is_permission_denied(stack: Stack, sdk: MakeClient) -> None:
    upstream_before = stack.upstream_requests()
    with pytest.raises(openai.PermissionDeniedError) as info:
        await done(sdk("scoped").chat.completions.create(
            model="gpt-4o", messages=MESSAGES, max_tokens=5
        ))
    assert_openai_error(info.value, 403, "model_not_allowed")
    assert stack.upstream_requests() == upstream_before


async def test_unpriced_model_is_bad_request(stack: Stack, sdk: MakeClient) -> None:
    upstream_before = stack.upstream_requests()
    with pytest.raises(openai.BadRequestError) as info:
        await done(sdk("apps").chat.completions.create(
            model="e2e-model-nobody-priced", messages=MESSAGES, max_tokens=5
        ))
    assert_openai_error(info.value, 400, "model_not_priced")
    assert stack.upstream_requests() == upstream_before


def assert_budget_exceeded(exc: openai.RateLimitError) -> None:
    assert_openai_error(exc, 429, "budget_exceeded")
    assert isinstance(exc.body, dict)
    assert exc.body["code"] == "budget_exceeded"
    assert exc.body["type"] == "budget_exceeded"


async def test_request_that_can_never_fit_is_rate_limited_for_good(
    stack: Stack, sdk: MakeClient, kind: str
) -> None:
    upstream_before = stack.upstream_requests()
    with pytest.raises(openai.RateLimitError) as info:
        await done(sdk(f"never-{kind}").chat.completions.create(
            model=CHAT_MODEL, messages=MESSAGES, max_tokens=NEVER_FITS_PER_HOUR + 1
        ))
    exc = info.value
    assert_budget_exceeded(exc)
    assert f"never-{kind}" in exc.body["message"]  # type: ignore[index]
    assert exc.response.headers["x-should-retry"] == "false"  # waiting will never help
    assert "retry-after" not in exc.response.headers
    assert stack.upstream_requests() == upstream_before


async def test_full_hourly_window_says_when_to_retry(
    stack: Stack, sdk: MakeClient, kind: str
) -> None:
    client = sdk(f"hourly-{kind}")
    half = HOURLY_LIMIT // 2 + 1  # two of these never fit together
    first = await done(client.chat.completions.create(
        model=CHAT_MODEL, messages=MESSAGES, max_tokens=half
    ))
    assert first.usage.completion_tokens == half
    upstream_before = stack.upstream_requests()
    with pytest.raises(openai.RateLimitError) as info:
        await done(client.chat.completions.create(
            model=CHAT_MODEL, messages=MESSAGES, max_tokens=half
        ))
    exc = info.value
    assert_budget_exceeded(exc)
    retry_after = int(exc.response.headers["retry-after"])
    assert 1 <= retry_after <= HOUR_S + 60  # an hourly window frees within a bucket after
    assert exc.response.headers.get("x-should-retry") != "false"  # it frees within the hour
    assert stack.upstream_requests() == upstream_before


# -- what is charged -----------------------------------------------------------------------------


SPENT_OUTPUT = 7 + 9 + 3 + 2 + 4 + 0 + 5 + DEFAULT_OUTPUT  # by spend_on_every_endpoint


async def spend_on_every_endpoint(client: Any) -> int:
    """One call of each kind, and one the upstream fails; returns the input tokens of the
    chat call that ``boundary_chat`` makes again (max_tokens aside, it counts the same)."""
    chat = await done(client.chat.completions.create(
        model=CHAT_MODEL, messages=MESSAGES, max_tokens=7
    ))
    await drain(await done(client.chat.completions.create(
        model=CHAT_MODEL, messages=MESSAGES, max_tokens=9, stream=True
    )))
    await drain(await done(client.chat.completions.create(
        model=CHAT_MODEL, messages=MESSAGES, max_tokens=3, stream=True,
        stream_options={"include_usage": True},
    )))
    await done(client.completions.create(model=CHAT_MODEL, prompt="abc", max_tokens=2))
    await drain(await done(client.completions.create(
        model=CHAT_MODEL, prompt="abc def", max_tokens=4, stream=True
    )))
    await done(client.embeddings.create(model=EMBED_MODEL, input="embed me"))
    await done(client.responses.create(model=CHAT_MODEL, input="hi", max_output_tokens=5))
    await drain(await done(client.responses.create(model=CHAT_MODEL, input="hi", stream=True)))
    with pytest.raises(openai.InternalServerError):  # upstream error: nothing may be charged
        await done(client.chat.completions.create(
            model=CHAT_MODEL, messages=MESSAGES, max_tokens=50,
            metadata={"mock_fault": "500"},
        ))
    prompt_tokens: int = chat.usage.prompt_tokens
    return prompt_tokens


def boundary_chat(client: Any, max_tokens: int) -> Any:
    return client.chat.completions.with_raw_response.create(
        model=CHAT_MODEL, messages=MESSAGES, max_tokens=max_tokens
    )


async def test_charged_usage_is_exactly_what_the_upstream_reported(
    stack: Stack, sdk: MakeClient, kind: str
) -> None:
    """Spend on every endpoint (usage hidden or not), then set the budget's daily token limit
    to exactly what the mock reported plus one more request: a request one token larger is
    refused, that request fits to the token, and then nothing fits."""
    client = sdk(f"meter-{kind}")
    before = stack.reported()
    prompt_tokens = await spend_on_every_endpoint(client)
    need = prompt_tokens + 7  # reserved for, and reported for, boundary_chat(client, 7)

    spent = stack.reported_since(before, lambda d: d.output == SPENT_OUTPUT)
    assert spent.output == SPENT_OUTPUT
    limit = spent.total + need
    stack.set_meter(kind, limit)  # waits for the reload: every call above has settled by then
    assert stack.reported() - before == spent
    upstream_before = stack.upstream_requests()

    with pytest.raises(openai.RateLimitError) as over:
        await done(boundary_chat(client, 8))  # one token past the limit
    assert_budget_exceeded(over.value)
    message = over.value.body["message"]  # type: ignore[index]
    assert f"meter-{kind}" in message
    assert str(spent.total) in message and str(limit) in message  # used and limit, exact
    assert stack.upstream_requests() == upstream_before, "a refused request reached upstream"

    raw = await done(boundary_chat(client, 7))  # exactly at the limit: admitted
    assert raw.parse().usage.total_tokens == need
    assert raw.headers["x-budget-usage-ratio"] == "1.0000"
    assert stack.reported_since(before, lambda d: d.total == limit).total == limit

    with pytest.raises(openai.RateLimitError) as full:
        await done(boundary_chat(client, 1))
    assert_budget_exceeded(full.value)
