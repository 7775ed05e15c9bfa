"""The request path, one stage per module: auth -> resolve -> estimate -> budgets -> forward ->
usage -> record. ``handler.py`` only sequences them."""
