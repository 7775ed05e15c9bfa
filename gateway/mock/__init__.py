"""A local OpenAI-compatible fake upstream with deterministic usage (for demos, tests and
benchmarks). ``gateway.mock_upstream`` is its facade: ``make_app`` and ``run``.

Modules: ``app`` (routes, faults applied, streaming, ``run``), ``shapes`` (OpenAI wire
shapes), ``send`` (answers on the wire), ``fields`` (request fields, checked), ``faults``
(fault syntax), ``stats`` (what was served and reported; worst mode's ledger), ``files`` and
``batches`` (the Files and Batch APIs; ``batch_input``: a batch's request and lines checked).
Worst mode: ``worst`` (the usage rules), ``stored`` (kept and background responses),
``billing`` (the ledger entry and bill of each request).
"""
