"""The mock upstream: nginx from Debian answering with a fixed chat.completion (JSON, with
usage) and a fixed SSE stream (content chunks, a finish chunk, a usage chunk, ``[DONE]``).

nginx is configured from ``nginx.conf.template`` in a temporary directory (no daemon, one
worker, pid, logs and temp paths in that directory). It listens on
``/v1/chat/completions`` (JSON) and ``/stream/v1/chat/completions`` (SSE): see the template
for why two paths, and why ``return 200`` rather than static files.
"""

from __future__ import annotations

import contextlib
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from bench.services import Service, free_port, require, service

TEMPLATE = Path(__file__).with_name("nginx.conf.template")
JSON_MODEL, STREAM_MODEL = "gpt-4o-mini", "gpt-4o"  # both in the shipped pricing
JSON_PATH, STREAM_PATH = "/v1", "/stream/v1"  # base_urls on the nginx origin
# the prompt tokens it reports: fewer than the smallest bench body holds (a 1 KB body is about
# 180 tokens), as a real upstream's count is never above the gateway's bound; an answer that
# billed more would be charged at the bound and logged as an error on every request
PROMPT_TOKENS, ANSWER_WORDS = 100, ("Hello", " there", ",", " this", " is", " a", " fixed",
                                    " answer", ".")
CREATED = 1_700_000_000


def chat_json() -> bytes:
    answer = "".join(ANSWER_WORDS)
    return orjson.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": CREATED,
        "model": JSON_MODEL, "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer,
                                             "refusal": None},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": _usage(),
    })


def chat_sse() -> bytes:
    def chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
        return b"data: " + orjson.dumps({
            "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": CREATED,
            "model": STREAM_MODEL, "system_fingerprint": "fp_bench", "choices": choices,
            "usage": usage}) + b"\n\n"

    def delta(content: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": content, "logprobs": None, "finish_reason": finish}]

    events = [chunk(delta({"role": "assistant", "content": ""}))]
    events += [chunk(delta({"content": word})) for word in ANSWER_WORDS]
    events += [chunk(delta({}, "stop")), chunk([], _usage()), b"data: [DONE]\n\n"]
    return b"".join(events)


def _usage() -> dict[str, Any]:
    completion = len(ANSWER_WORDS)
    return {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": completion,
            "total_tokens": PROMPT_TOKENS + completion,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0}}


def _quoted(payload: bytes) -> str:
    """As the inside of an nginx single-quoted string: no quote, backslash or variable."""
    text = payload.decode()
    bad = {"'", "\\", "$"} & set(text)
    if bad:
        raise ValueError(f"nginx cannot return {sorted(bad)} unescaped")
    return text


def render(root: Path, port: int) -> str:
    return string.Template(TEMPLATE.read_text()).substitute(
        root=root, port=port, chat_json=_quoted(chat_json()), chat_sse=_quoted(chat_sse()))


@contextlib.contextmanager
def nginx(tmp: Path) -> Iterator[Service]:
    """nginx serving the fixed answers; its ``url`` is the origin (no path)."""
    binary = require("nginx", "apt-get install nginx-light (or nginx)")
    root = tmp / "nginx"
    root.mkdir()
    port = free_port()
    conf = root / "nginx.conf"
    conf.write_text(render(root, port))
    command = [binary, "-p", str(root), "-c", str(conf), "-e", str(root / "nginx-error.log")]
    with service(command, port, root / "nginx.out") as proc:
        yield proc
