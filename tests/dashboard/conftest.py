"""The in-process gateway harness of the proxy tests, shared here."""

from tests.proxy.conftest import gateway

__all__ = ["gateway"]
