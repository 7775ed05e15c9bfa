"""An OpenAI-compatible reverse proxy that reserves and enforces LLM budgets inline."""

__version__ = "0.1.0"
