"""A local OpenAI-compatible fake upstream with deterministic usage: ``make_app`` and ``run``.

Routes under ``/v1``: ``POST /chat/completions``, ``/completions``, ``/embeddings``,
``/responses``, ``GET /models``; test helpers ``GET /v1/mock/stats`` and ``POST /v1/mock/reset``
(also without the ``/v1`` prefix). Faults are described in ``gateway.mock.faults``.
``make_app(worst=True)`` / ``run(worst=True)`` bill as the real API may at its worst
(``gateway.mock.worst``) and add ``GET``/``DELETE /v1/responses/{id}``,
``POST /v1/responses/{id}/cancel`` and ``GET /v1/responses/{id}/input_items``. Both modes
serve the Files API (``/v1/files``, ``/v1/files/{id}``, ``/v1/files/{id}/content``) and the
Batch API (``/v1/batches``, ``/v1/batches/{id}``, ``/v1/batches/{id}/cancel``), late, each line
answered and billed as the request alone (``gateway.mock.batches``).
"""

from gateway.mock.app import STATS, make_app, run
from gateway.mock.faults import Fault
from gateway.mock.fields import TokenCounter
from gateway.mock.stats import Ledger, LedgerEntry, MockStats

__all__ = [
    "STATS", "Fault", "Ledger", "LedgerEntry", "MockStats", "TokenCounter", "make_app", "run",
]
