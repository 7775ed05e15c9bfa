"""Spend reports and budget administration: the core the admin API and the CLI both use."""
