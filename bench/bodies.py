"""Request bodies of an exact size: a chat request whose user message is English-like text.

Each body carries ``MARKER`` at the start of its message: the wrk script replaces it with the
request's sequence number, so no two requests send the same bytes (a cache keyed on the body
would otherwise make every request after the first look free).
"""

from __future__ import annotations

import random
from pathlib import Path

import orjson

MARKER = "#00000000"  # the wrk script's placeholder: 9 characters, replaced by "#%08d"
MAX_TOKENS = 16
SENTENCE = (
    "the budget gateway counts every token of a request before it forwards it and settles "
    "the usage the upstream reports once the answer arrives so that no tenant can spend past "
    "its limit even when hundreds of requests race for the last dollar of a daily budget"
)
WORDS = SENTENCE.split()


def chat_body(model: str, size: int, *, stream: bool = False) -> bytes:
    """A chat completion request of exactly ``size`` bytes (at least the empty skeleton)."""
    def render(content: str) -> bytes:
        body: dict[str, object] = {"model": model, "max_tokens": MAX_TOKENS,
                                   "messages": [{"role": "user", "content": content}]}
        if stream:
            body["stream"] = True
        return orjson.dumps(body)

    room = size - len(render(MARKER + " "))
    text = fill(random.Random(size), WORDS, max(room, 0), " ")
    body = render(f"{MARKER} {text}")
    if len(body) != max(size, len(render(MARKER + " "))):
        raise AssertionError(f"body of {len(body)} bytes, wanted {size}")
    return body


def fill(rng: random.Random, pieces: list[str], chars: int, sep: str) -> str:
    """Exactly ``chars`` characters of ``pieces`` drawn at random, joined by ``sep``."""
    out: list[str] = []
    size = 0
    while size < chars:
        piece = rng.choice(pieces)
        out.append(piece)
        size += len(piece) + len(sep)
    return sep.join(out)[:chars]


def write_body(directory: Path, name: str, body: bytes) -> Path:
    path = directory / f"{name}.json"
    path.write_bytes(body)
    return path
