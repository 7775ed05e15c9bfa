"""Who a request is for: a tenant's own customer, when the tenant serves many through one key.

Named by the request: OpenAI's ``safety_identifier``, else its older ``user`` field, else the
header the tenant's backend sets (``end_user_header``, ``x-end-user`` by default). An id is
bounded (``limits.end_user_max`` characters) and printable; one that is not is a 400, raised
only where a budget needs the end user (``per: end_user`` or ``end_user_required``), so the
``user`` field of a tenant without such budgets passes as before. Counters are keyed by a
fixed-size digest of the id, so a long id never makes a long key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import InvalidRequest
from gateway.settings.checks import bounded_problem
from gateway.settings.schema import Settings

FIELDS = ("safety_identifier", "user")  # in the body, first found wins
DIGEST_BYTES = 12  # 96 bits: a collision among a tenant's users is not a practical concern


@dataclass(frozen=True, slots=True)
class EndUser:
    """The end user a request names (``id`` None: none, or a malformed one), and where."""

    id: str | None
    header: str  # the header that could have named one, for the error requiring one
    digest: str = ""  # what the end user's counters are keyed by
    problem: str | None = None  # what is wrong with the one given, if anything
    param: str | None = None  # the body field it came from (None: the header)

    def named(self) -> bool:
        """Whether the request names an end user, for a budget that uses one: a 400 if the
        one it gives is malformed."""
        if self.problem is not None:
            raise InvalidRequest(self.problem, param=self.param, code="invalid_end_user")
        return self.id is not None

    def required_by(self, budget: str) -> InvalidRequest:
        return InvalidRequest(
            f"Budget '{budget}' requires an end user: set 'safety_identifier' (or 'user') in "
            f"the request body, or the '{self.header}' header.",
            param="safety_identifier", code="end_user_required")


UNNAMED = EndUser(None, Settings().end_user_header)  # no end user, the default header


def end_user_of(body: Mapping[str, Any], headers: Mapping[str, str], settings: Settings
                ) -> EndUser:
    """The request's end user, as given: checked here, refused only where one is used."""
    header = settings.end_user_header
    for name in FIELDS:
        value = body.get(name)
        if value is not None and value != "":
            return _checked(value, f"the '{name}' field", name, header, settings)
    value = headers.get(header)
    if value:
        return _checked(value, f"the '{header}' header", None, header, settings)
    return EndUser(None, header)


def queried(value: str | None, settings: Settings, param: str = "end_user") -> EndUser | None:
    """The end user a report or status query names (None: none), checked as a request's is:
    a malformed one is a 400 naming ``param``."""
    if not value:
        return None
    found = _checked(value, f"the '{param}' parameter", param, settings.end_user_header,
                     settings)
    found.named()
    return found


def _checked(value: object, where: str, param: str | None, header: str, settings: Settings
             ) -> EndUser:
    if not isinstance(value, str):
        return EndUser(None, header, problem=f"Invalid end user in {where}: expected a string.",
                       param=param)
    problem = bounded_problem(value, settings.limits.end_user_max, "limits.end_user_max")
    if problem is not None:
        return EndUser(None, header, problem=f"Invalid end user in {where}: {problem}.",
                       param=param)
    digest = hashlib.blake2b(value.encode(), digest_size=DIGEST_BYTES).hexdigest()
    return EndUser(value, header, digest, param=param)
