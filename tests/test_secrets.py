"""No tenant key or upstream key ever appears in a log line or a response: checked over
everything the whole run produced (this test is ordered last)."""

from __future__ import annotations

from tests import leaks


def test_no_secret_in_any_log_or_response() -> None:
    assert leaks.SECRETS, "the suite registered the secrets it uses"
    assert leaks.TEXTS, "the suite captured what it produced"
    assert leaks.leaks() == []
