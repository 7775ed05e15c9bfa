"""Store URLs split without ``urlsplit``'s checks on the host part: a cluster's seed list
(``h1:7000,[::1]:7001``) is no single URL's netloc, and recent Pythons (Debian's 3.11 among
them) refuse it there with "Invalid IPv6 URL"."""

from __future__ import annotations

from urllib.parse import SplitResult


def split(url: str) -> SplitResult:
    """``scheme://netloc/path?query#fragment``, the netloc taken as written."""
    scheme, sep, after = url.partition("://")
    if not sep:
        return SplitResult("", "", url, "", "")
    rest, _, fragment = after.partition("#")
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    return SplitResult(scheme.lower(), netloc, slash + path, query, fragment)


def join(parts: SplitResult) -> str:
    """The inverse of ``split``."""
    query = f"?{parts.query}" if parts.query else ""
    fragment = f"#{parts.fragment}" if parts.fragment else ""
    return f"{parts.scheme}://{parts.netloc}{parts.path}{query}{fragment}"
