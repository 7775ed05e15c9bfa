"""How fast the estimate stage counts, and how far the fallback estimator strays.

Run from the repository root: ``python -m bench.token_speed``.
"""

from __future__ import annotations

import argparse
import collections
import functools
import inspect
import json.decoder
import json.encoder
import logging
import pathlib
import random
import shutil
import statistics
import string
import subprocess
import textwrap
import time
from collections.abc import Callable

import orjson

from bench.bodies import fill
from gateway.cost.tokens import (
    CL100K_BASE,
    EXPECTED_SHA256,
    O200K_BASE,
    FallbackEncoder,
    Tokenizers,
    default_tokenizers,
)
from gateway.proxy.endpoints import Endpoint
from gateway.proxy.estimate import count_input_tokens

ENGLISH_SOURCES = (argparse, collections, functools, logging, pathlib, shutil, subprocess)
CODE_SOURCES = (textwrap, shutil, json.decoder, json.encoder)
SEED_TEXT = (
    "the budget gateway reserves tokens before each request and settles the actual usage after "
    "the upstream answers so that concurrent calls cannot overshoot a limit while operators "
    "watch spend per tenant model and key across rolling hourly daily and monthly windows"
)
WORDS = SEED_TEXT.split()
CJK = (
    "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着"
    "去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主"
    "行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二"
    "理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走"
    "电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市"
    "眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提"
    "感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台象记边共风战干接它"
    "许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非流每青"
    "管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办运武半候七必城父强步"
    "完革深区即求品士转量空甚众技轻程告江语英基派满式李息写呢识极令黄德收脸钱党倒未持"
    "取设始版双历越史商千片容研像找友孩站广改议形委早房音火际则首单据导影失拿网香似斯"
    "专石若兵弟谁校读志飞观争究包组造落视济喜离虽坏兴切格晚习否之ひらがなカタカナ日本"
    "語のテキストです。、「」"
)
EMOJI = "😀😂🥲😍🤔👍🙏🔥🚀🎉✅❌⭐🌍🍕🐍💡📈🧪👩‍💻🏳️‍🌈"


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_us(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm
    return statistics.median(timed(fn) for _ in range(runs)) * 1e6


def english(rng: random.Random, chars: int) -> str:
    """Real technical English: the standard library's own docstrings, in a shuffled order."""
    docs = [
        doc
        for module in ENGLISH_SOURCES
        for name, obj in sorted(vars(module).items())
        if not name.startswith("_")
        and (inspect.isfunction(obj) or inspect.isclass(obj))
        and getattr(obj, "__module__", None) == module.__name__
        and (doc := inspect.getdoc(obj))
    ]
    return fill(rng, docs, chars, "\n\n")


def code(rng: random.Random, chars: int) -> str:
    """Real Python: standard library sources, function by function."""
    blocks = [
        inspect.getsource(obj)
        for module in CODE_SOURCES
        for name, obj in sorted(vars(module).items())
        if inspect.isfunction(obj) and obj.__module__ == module.__name__
    ]
    return fill(rng, blocks, chars, "\n\n")


def json_text(rng: random.Random, chars: int) -> str:
    records = []
    size = 0
    while size < chars:
        record = {
            "id": "".join(rng.choices(string.ascii_lowercase + string.digits, k=12)),
            "model": rng.choice(["gpt-4o-mini", "gpt-4.1", "text-embedding-3-small"]),
            "tokens": rng.randint(1, 100_000),
            "cost": round(rng.random() * 10, 6),
            "tags": rng.sample(WORDS, 3),
            "ok": rng.random() > 0.1,
        }
        records.append(record)
        size += len(orjson.dumps(record)) + 4
    return orjson.dumps(records, option=orjson.OPT_INDENT_2).decode()[:chars]


def cjk(rng: random.Random, chars: int) -> str:
    return "".join(rng.choice(CJK) for _ in range(chars))


def emoji(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    size = 0
    while size < chars:
        piece = rng.choice(EMOJI) if rng.random() < 0.5 else rng.choice(WORDS) + " "
        out.append(piece)
        size += len(piece)
    return "".join(out)


CORPUS: dict[str, Callable[[random.Random, int], str]] = {
    "English docs": english,
    "Python code": code,
    "JSON": json_text,
    "CJK text": cjk,
    "emoji + words": emoji,
}


def report_load() -> None:
    print("vocabulary load (gunzip + sha256 + parse + BPE core), fresh process state:")
    tokenizers = Tokenizers()
    for name in EXPECTED_SHA256:
        print(f"  {name:<12} {timed(functools.partial(tokenizers.encoding, name)) * 1e3:8.1f} ms")


def chat_body(model: str, text: str, messages: int) -> dict[str, object]:
    step = len(text) // messages
    parts = [text[i * step : (i + 1) * step] for i in range(messages)]
    roles = ["system", *["user", "assistant"] * messages][:messages]
    turns = [{"role": r, "content": p} for r, p in zip(roles, parts, strict=True)]
    return {"model": model, "messages": turns}


def report_speed(rng: random.Random) -> None:
    small = chat_body("gpt-4o", english(rng, 2_000), 5)
    big = chat_body("gpt-4o", english(rng, 700_000), 40)
    letters = chat_body("gpt-4o", "".join(rng.choices(string.ascii_lowercase, k=700_000)), 1)
    default_tokenizers().preload()
    print("count_input_tokens, gpt-4o (o200k_base):")
    us = median_us(lambda: count_input_tokens(Endpoint.CHAT, small), 2_000)
    print(f"  ~2,000-char chat, 5 messages     {us:10.1f} us (median of 2,000)")
    ms = median_us(lambda: count_input_tokens(Endpoint.CHAT, big), 21) / 1e3
    print(f"  700,000-char chat, 40 messages   {ms:10.1f} ms (median of 21)")
    ms = median_us(lambda: count_input_tokens(Endpoint.CHAT, letters), 5) / 1e3
    print(f"  700,000 a-z letters, no spaces   {ms:10.1f} ms (median of 5; worst case)")


def report_fallback(rng: random.Random) -> None:
    fallback = FallbackEncoder()
    exact = {name: default_tokenizers().encoding(name) for name in (O200K_BASE, CL100K_BASE)}
    print("fallback estimate vs exact count (positive = overestimate):")
    print(
        f"  {'corpus':<14} {'chars':>7} {'fallback':>9}"
        f" {'o200k':>7} {'off':>7} {'cl100k':>7} {'off':>7}"
    )
    totals = {"fallback": 0, O200K_BASE: 0, CL100K_BASE: 0}
    for label, make in CORPUS.items():
        text = make(rng, 20_000)
        guess = fallback.count(text)
        counts = {name: encoder.count(text) for name, encoder in exact.items()}
        totals["fallback"] += guess
        for name, count in counts.items():
            totals[name] += count
        print(f"  {label:<14} {len(text):>7} {guess:>9} " + _pair(guess, counts))
    print(
        f"  {'mixed (sum)':<14} {'':>7} {totals['fallback']:>9} "
        + _pair(totals["fallback"], {n: totals[n] for n in (O200K_BASE, CL100K_BASE)})
    )


def _pair(guess: int, counts: dict[str, int]) -> str:
    return " ".join(f"{c:>7} {(guess - c) / c * 100:>+6.1f}%" for c in counts.values())


def main() -> None:
    rng = random.Random(20240601)
    report_load()
    report_speed(rng)
    report_fallback(rng)


if __name__ == "__main__":
    main()
