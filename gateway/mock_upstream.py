"""A local OpenAI-compatible fake upstream with deterministic usage: ``make_app`` and ``run``.

Routes under ``/v1``: ``POST /chat/completions``, ``/completions``, ``/embeddings``,
``/responses``, ``GET /models``; test helpers ``GET /v1/mock/stats`` and ``POST /v1/mock/reset``
(also without the ``/v1`` prefix). Faults are described in ``gateway.mock.faults``.
"""

from gateway.mock.app import STATS, TokenCounter, make_app, run
from gateway.mock.faults import Fault
from gateway.mock.stats import MockStats

__all__ = ["STATS", "Fault", "MockStats", "TokenCounter", "make_app", "run"]
