"""The proxy routes fuzzed end to end: hypothesis writes requests (near-valid bodies of every
endpoint with any JSON where the gateway expects something precise: numbers of any size and
sign, wrong types, odd model names, nesting) to a gateway process in front of the mock upstream.

Every answer must be a well-formed success or an OpenAI-shaped error below 500; afterwards
nothing stays reserved and the store holds exactly the usage the mock served, so no request
reached the upstream unmetered. The budget (a million tokens a day) refuses every request that
asks for more, so no draw can make the mock write a giant answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import leaks
from tests.procs import Proc, gateway_process, mock_upstream

SECRET = "sk-fuzz-tenant-0123456789abcdef"
ADMIN = "sk-fuzz-admin-0123456789abcdef"
OPS_TOKEN = "fuzz-ops-token-0123456789abcdef"  # /metrics is the operators', not tenants'
leaks.SECRETS.update([SECRET, ADMIN, OPS_TOKEN])
TIMEOUT_S = 30
EXAMPLES = settings(max_examples=300, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

CONFIG = """
store: "memory://"
max_body_bytes: 65536
default_max_output_tokens: 16
upstreams:
  mock: {{base_url: "{mock}/v1", api_key: "k", timeout_s: 10}}
tenants:
  fuzz:
    keys:
      - {{name: app, sha256: "{sha}"}}
      - {{name: ops, sha256: "{admin_sha}", role: admin}}
budgets:
  - {{name: fuzz-day, tenant: fuzz, max_tokens_per_day: 1000000}}
ops: {{token: "{ops_token}"}}
"""

ENDPOINTS = ("/chat/completions", "/completions", "/embeddings", "/responses")
MODELS = st.sampled_from(["gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "o3", "llama-3",
                          "", "gpt-4o\r\nX-Evil: 1", "../../admin", "🙂"]) | st.text(max_size=12)
# Small counts the mock may really produce, and values that must be refused or denied.
COUNTS = (st.integers(min_value=-3, max_value=24)
          | st.sampled_from([2**31, 2**63, 10**30, -(2**63), 10**6]) | st.floats(allow_nan=False)
          | st.booleans() | st.text(max_size=4) | st.none())
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(
    max_size=40)
JSON: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
CONTENT = (st.text(max_size=300) | JSON
           | st.lists(st.fixed_dictionaries({"type": st.sampled_from(
               ["text", "image_url", "input_text", "input_audio", "refusal", "file", "x"])},
               optional={"text": st.text(max_size=80) | JSON, "image_url": JSON,
                         "detail": st.sampled_from(["low", "high", "auto"]) | JSON}),
               max_size=3))
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "developer"]) | JSON,
     "content": CONTENT},
    optional={"name": st.text(max_size=10) | JSON, "tool_calls": JSON})
PRICED = st.sampled_from(["gpt-4o-mini", "gpt-4o", "o3"])
TEXT = st.text(max_size=300)
# A body each endpoint accepts, as a client would send it ...
VALID = {
    "/chat/completions": st.fixed_dictionaries(
        {"model": PRICED, "messages": st.lists(st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "system", "assistant"]), "content": TEXT}),
            min_size=1, max_size=3)},
        optional={"max_tokens": st.integers(1, 24), "n": st.integers(1, 3),
                  "stream": st.booleans(),
                  "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()})}),
    "/completions": st.fixed_dictionaries(
        {"model": PRICED, "prompt": TEXT | st.lists(TEXT, min_size=1, max_size=3)},
        optional={"max_tokens": st.integers(1, 24), "stream": st.booleans()}),
    "/embeddings": st.fixed_dictionaries(
        {"model": st.just("text-embedding-3-small"),
         "input": TEXT.filter(bool) | st.lists(TEXT.filter(bool), min_size=1, max_size=3)}),
    "/responses": st.fixed_dictionaries(
        {"model": PRICED, "input": TEXT.filter(bool)},
        optional={"max_output_tokens": st.integers(1, 24), "stream": st.booleans()}),
}
# ... and what a hostile or buggy one puts in its fields instead.
HOSTILE = {
    "model": MODELS | JSON, "messages": st.lists(MESSAGE, max_size=4) | JSON,
    "prompt": JSON, "input": JSON, "max_tokens": COUNTS, "max_completion_tokens": COUNTS,
    "max_output_tokens": COUNTS, "n": COUNTS, "best_of": COUNTS, "stream": JSON,
    "stream_options": JSON, "tools": JSON, "response_format": JSON, "metadata": JSON,
}


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """An endpoint and its body: valid, or valid with up to three fields made hostile."""
    endpoint = draw(st.sampled_from(ENDPOINTS))
    body: dict[str, Any] = dict(draw(VALID[endpoint]))
    for name in draw(st.lists(st.sampled_from(sorted(HOSTILE)), max_size=3, unique=True)):
        body[name] = draw(HOSTILE[name])
    return endpoint, body


@contextlib.contextmanager
def stack(tmp: Path) -> Iterator[tuple[Proc, Proc]]:
    with mock_upstream(tmp) as mock:
        config = tmp / "fuzz.yaml"
        config.write_text(CONFIG.format(
            mock=mock.url, sha=hashlib.sha256(SECRET.encode()).hexdigest(), ops_token=OPS_TOKEN,
            admin_sha=hashlib.sha256(ADMIN.encode()).hexdigest()))
        with gateway_process(config, tmp / "fuzz-gateway.log") as gateway:
            yield mock, gateway


@pytest.fixture(scope="module")
def procs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Proc]]:
    with stack(tmp_path_factory.mktemp("fuzz")) as both:
        yield both


def call(url: str, body: bytes | None = None, key: str = SECRET) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, data=body, headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


SEEN: dict[int, int] = {}


@EXAMPLES
@given(request=requests())
def test_any_request_is_answered_well_formed_below_500(
    procs: tuple[Proc, Proc], request: tuple[str, dict[str, Any]]
) -> None:
    _, gateway = procs
    endpoint, body = request
    raw = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
    status, content_type, payload = call(gateway.url + "/v1" + endpoint, raw)
    SEEN[status] = SEEN.get(status, 0) + 1
    assert status < 500, payload[:300]
    if content_type.startswith("text/event-stream"):
        last = payload.rstrip().rsplit(b"\n", 1)[-1]
        done = last == b"data: [DONE]"
        if endpoint == "/responses":  # its stream ends on a terminal event instead
            done = any(b'"type":"response.%s"' % end in last
                       for end in (b"completed", b"incomplete", b"failed"))
        assert status == 200 and done, payload[-200:]
        return
    answer = json.loads(payload)
    if status >= 400:
        assert isinstance(answer["error"]["message"], str) and answer["error"]["message"]


def test_zz_after_the_fuzz_the_ledger_is_exact(
    procs: tuple[Proc, Proc], capsys: pytest.CaptureFixture[str]
) -> None:
    """Ordered after the fuzz (same module, later name): nothing held, nothing unmetered."""
    mock, gateway = procs
    _, _, metrics = call(gateway.url + "/metrics", key=OPS_TOKEN)
    held = [line for line in metrics.decode().splitlines()
            if line.startswith("gateway_reservations_in_flight ")]
    assert held == ["gateway_reservations_in_flight 0.0"]
    stats = json.loads(call(mock.url + "/v1/mock/stats")[2])
    report = json.loads(call(gateway.url + "/api/client/v1/spend/report", key=ADMIN)[2])
    expected = (stats["input_tokens"] + stats["unreported_input_tokens"],
                stats["produced_output_tokens"])
    assert (report["total_input_tokens"], report["total_output_tokens"]) == expected
    with capsys.disabled():
        print(f"\nproxy fuzz: {sum(SEEN.values())} generated requests, statuses "
              f"{dict(sorted(SEEN.items()))}; none 5xx; ledger difference 0")
