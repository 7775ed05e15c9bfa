"""A local OpenAI-compatible fake upstream with deterministic usage (for demos, tests and
benchmarks). ``gateway.mock_upstream`` is its facade: ``make_app`` and ``run``.

Modules: ``app`` (routes, faults applied, streaming, ``run``), ``shapes`` (OpenAI wire
shapes), ``faults`` (fault syntax), ``stats`` (what was served and reported).
"""
