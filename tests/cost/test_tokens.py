from __future__ import annotations

import gzip
import hashlib
import random
import threading

import pytest

from gateway.cost import tokens
from gateway.cost.tokens import (
    CL100K_BASE,
    EXPECTED_SHA256,
    O200K_BASE,
    FallbackEncoder,
    Tokenizers,
    VocabularyError,
    default_tokenizers,
    encoder_for,
    encoding_name_for,
    parse_ranks,
    read_packaged_vocabulary,
)


def test_packaged_vocabularies_match_tiktokens_pinned_hashes() -> None:
    for name, expected in EXPECTED_SHA256.items():
        data = gzip.decompress(read_packaged_vocabulary(name))
        assert hashlib.sha256(data).hexdigest() == expected


def test_corrupt_vocabulary_is_refused() -> None:
    good = gzip.decompress(read_packaged_vocabulary(CL100K_BASE))
    corrupt = good.replace(b"IQ== 0", b"Ig== 0", 1)
    tokenizers = Tokenizers(read=lambda name: gzip.compress(corrupt))
    with pytest.raises(VocabularyError, match="sha256"):
        tokenizers.encoding(CL100K_BASE)


def test_vocabulary_that_is_not_gzip_is_refused() -> None:
    with pytest.raises(VocabularyError, match="gzip"):
        Tokenizers(read=lambda name: b"not gzip").encoding(O200K_BASE)


def test_unknown_vocabulary_is_refused() -> None:
    with pytest.raises(VocabularyError, match="p50k_base"):
        Tokenizers().encoding("p50k_base")


def test_tiktoken_pinning_another_hash_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tiktoken upgrade that changes a vocabulary must not pair new patterns with old ranks."""
    data = b"IQ== 0\n"
    monkeypatch.setitem(tokens.EXPECTED_SHA256, O200K_BASE, hashlib.sha256(data).hexdigest())
    with pytest.raises(VocabularyError, match="installed tiktoken expects"):
        Tokenizers(read=lambda name: gzip.compress(data)).encoding(O200K_BASE)


def test_parse_ranks() -> None:
    assert parse_ranks(b"IQ== 0\naGk= 1\n\n") == {b"!": 0, b"hi": 1}
    with pytest.raises(VocabularyError):
        parse_ranks(b"IQ== 0\naGk=\n")
    with pytest.raises(VocabularyError):
        parse_ranks(b"IQ== zero\n")


@pytest.mark.parametrize("name", [O200K_BASE, CL100K_BASE])
def test_hello_world_is_two_tokens(name: str) -> None:
    assert default_tokenizers().encoding(name).count("hello world") == 2


@pytest.mark.parametrize("name", [O200K_BASE, CL100K_BASE])
def test_special_token_text_counts_as_ordinary_text(name: str) -> None:
    encoder = default_tokenizers().encoding(name)
    assert encoder.count("say <|endoftext|> please") > encoder.count("say  please") + 1


def test_each_vocabulary_loads_once_across_threads() -> None:
    tokenizers = Tokenizers()
    seen = []
    threads = [
        threading.Thread(target=lambda: seen.append(tokenizers.encoding(CL100K_BASE)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 4
    assert all(encoder is seen[0] for encoder in seen)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o", O200K_BASE),
        ("gpt-4o-mini-2024-07-18", O200K_BASE),
        ("gpt-4.1-nano", O200K_BASE),
        ("gpt-4.5-preview", O200K_BASE),
        ("gpt-5", O200K_BASE),
        ("o1-mini", O200K_BASE),
        ("o3", O200K_BASE),
        ("o4-mini", O200K_BASE),
        ("chatgpt-4o-latest", O200K_BASE),
        ("omni-moderation-latest", O200K_BASE),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", O200K_BASE),
        ("openai/gpt-4o", O200K_BASE),
        ("gpt-4", CL100K_BASE),
        ("gpt-4-0613", CL100K_BASE),
        ("gpt-4-turbo", CL100K_BASE),
        ("gpt-3.5-turbo-instruct", CL100K_BASE),
        ("text-embedding-3-small", CL100K_BASE),
        ("text-embedding-ada-002", CL100K_BASE),
        ("llama-3-70b", None),
        ("claude-3-5-sonnet", None),
        ("gpt-4x", None),
        ("", None),
    ],
)
def test_model_to_vocabulary(model: str, expected: str | None) -> None:
    assert encoding_name_for(model) == expected
    encoder = encoder_for(model)
    assert encoder.exact is (expected is not None)
    assert encoder.name == (expected or "fallback")


def test_encoder_for_is_cached_per_model() -> None:
    assert encoder_for("gpt-4o") is encoder_for("gpt-4o")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", 0), ("abcd", 4), ("日本", 6), ("😀", 4), ("a" * 400, 400)],
)
def test_fallback_counts_utf8_bytes(text: str, expected: int) -> None:
    assert FallbackEncoder().count(text) == expected


def test_fallback_is_an_upper_bound_on_every_shipped_vocabulary() -> None:
    """No byte-level BPE token is shorter than a byte: the fallback never counts fewer."""
    rng = random.Random(7)
    alphabet = "abc xyz{}\n éü日本語😀🚀"
    exact = [encoder_for("gpt-4o"), encoder_for("gpt-4")]
    for _ in range(200):
        text = "".join(rng.choices(alphabet, k=rng.randrange(0, 300)))
        assert all(FallbackEncoder().count(text) >= e.count(text) for e in exact)


def test_text_with_a_very_long_piece_is_bounded_by_its_bytes() -> None:
    """BPE is superlinear in a piece without whitespace: such text is bounded by its UTF-8
    length (never below the exact count) instead of costing a core for each request."""
    encoder = encoder_for("gpt-4o")
    pathological = "x" * 200_000
    assert encoder.count(pathological) == 200_000
    assert encoder.count("é" * 5_000) == 10_000
    prose = "budgets hold. " * 2_000
    assert encoder.count(prose) < len(prose) // 2  # ordinary text is still counted exactly
