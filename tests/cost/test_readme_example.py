"""The README's library example, the seed's two examples in Python, run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readmes_library_example_runs_and_prints_what_it_says() -> None:
    """Seed: "tracker := cost.NewInMemoryTracker(cost.WithMaxEntries(50000))" ...
    "fmt.Printf("24h cost: $%.4f over %d calls\\n", ...)", and the checker's example: the
    README's Python translation prints the output shown beneath it."""
    text = README.read_text()
    section = text[text.index("The library can be used without the proxy"):]
    match = re.search(r"```python\n(.*?)```\n\n```text\n(.*?)```", section, re.S)
    assert match is not None, "the README's library section lost its example or its output"
    code, shown = match.groups()
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=False)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == shown
