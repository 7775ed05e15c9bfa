"""The README's code blocks, run as written, in order, against the gateway its own "Run it for
real" block starts: so the README cannot drift from the product.

Each block is run or is listed in ``NOT_RUN_HERE`` with the reason; a new block that is neither
fails. The only change made to a block is the address: the README's ports (8080 for the
gateway, 9000 for the mock upstream) become free ones, and the run happens in a temporary
directory holding a copy of ``config/`` (so the state file does not land in the checkout).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from gateway.settings.load import parse_settings
from tests import leaks
from tests.procs import ROOT, free_port

README = ROOT / "README.md"
READY_S = 20.0
RUN_S = 60.0

RUN_HERE = {  # a line only that block has: the test that runs it
    ". .venv/bin/activate": "site",
    "from openai import OpenAI": "test_the_openai_sdk_block",
    'base_url: "https://api.openai.com/v1"': "test_the_real_upstream_block_replaces_the_mock",
    "curl -s": "test_the_admin_api_blocks_curl_then_python",
    "from gateway.client import": "test_the_admin_api_blocks_curl_then_python",
    "from gateway import cost": "test_the_library_block_prints_what_the_readme_shows",
    "24h cost: $0.0032 over 1 calls": "test_the_library_block_prints_what_the_readme_shows",
}
NOT_RUN_HERE = {  # a line only that block has: why this test does not run it
    ".venv/bin/pip install -q . && .venv/bin/gateway demo":
        "the README's install-and-demo command: CI and the newcomer trial run it on a fresh "
        "checkout; tests/test_cli.py runs `gateway demo`",
    "./scripts/test": "the test command itself: this test runs inside it",
    "  cli.py, app.py": "the layout, not code",
    "docker build": "needs Docker, absent here; tests/test_container.py checks the image's "
                    "files and command",
    "docker compose up": "needs Docker compose and OpenAI; tests/test_container.py checks "
                         "compose.yaml",
}


@dataclass(frozen=True, slots=True)
class Block:
    line: int
    lang: str
    text: str


def blocks() -> list[Block]:
    found = []
    for match in re.finditer(r"^```(\w*)\n(.*?)^```$", README.read_text(), re.M | re.S):
        line = README.read_text()[: match.start()].count("\n") + 1
        found.append(Block(line, match.group(1), match.group(2)))
    return found


@dataclass
class Site:
    """Where the blocks run: a directory with the README's files, and its two ports."""

    workdir: Path
    gateway_port: int
    mock_port: int

    def address(self, text: str) -> str:
        return (text.replace("127.0.0.1:8080", f"127.0.0.1:{self.gateway_port}")
                .replace("--port 9000", f"--port {self.mock_port}")
                .replace("127.0.0.1:9000", f"127.0.0.1:{self.mock_port}"))

    def env(self) -> dict[str, str]:
        path = os.environ.get("PYTHONPATH")
        return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)}

    def run(self, block: Block, *command: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*command, self.address(block.text)], cwd=self.workdir,
                              env=self.env(), capture_output=True, text=True, timeout=RUN_S,
                              check=False)
        assert done.returncode == 0, f"README block at line {block.line}:\n{done.stderr}"
        return done


def _block(marker: str) -> Block:
    (block,) = [b for b in blocks() if marker in b.text]
    return block


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The "Run it for real" block, run by bash in a directory with ``config/`` and ``.venv``
    (the venv running the tests): a mock upstream and a gateway, until the module ends."""
    workdir = tmp_path_factory.mktemp("readme")
    site = Site(workdir, free_port(), free_port())
    shutil.copytree(ROOT / "config", workdir / "config")
    config = workdir / "config" / "gateway.yaml"
    config.write_text(site.address(config.read_text()))
    _venv(workdir / ".venv")
    block = _block(". .venv/bin/activate")
    log = workdir / "run-it-for-real.log"
    leaks.LOG_FILES.append(log)
    with log.open("wb") as out:
        proc = subprocess.Popen(["bash", "-c", site.address(block.text)], cwd=workdir,
                                env=site.env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        _wait_ready(f"http://127.0.0.1:{site.gateway_port}/healthz", proc, log)
        yield site
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # bash, the mock it started, the gateway
        proc.wait(timeout=15)


def _venv(path: Path) -> None:
    """``.venv`` as the README's commands made it: the venv these tests run in, or (tests run
    from another Python) a stand-in whose ``activate`` puts that Python first on PATH."""
    prefix = Path(sys.prefix)
    if (prefix / "bin" / "activate").exists() and (prefix / "bin" / "gateway").exists():
        path.symlink_to(prefix)
        return
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "activate").write_text(f'export PATH="{Path(sys.executable).parent}:$PATH"\n')


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the README's run block exited {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"the gateway of the README's run block was not ready:\n{log.read_text()}")


def test_every_block_is_run_or_says_why_not() -> None:
    for block in blocks():
        run = [m for m in RUN_HERE if m in block.text]
        skipped = [m for m in NOT_RUN_HERE if m in block.text]
        assert len(run) + len(skipped) >= 1, (
            f"README block at line {block.line} ({block.text.splitlines()[0]!r}) is neither run "
            "by tests/test_readme.py nor listed in NOT_RUN_HERE with a reason")
    for marker in [*RUN_HERE, *NOT_RUN_HERE]:
        assert len([b for b in blocks() if marker in b.text]) == 1, marker


def test_the_openai_sdk_block(site: Site) -> None:
    done = site.run(_block("from openai import OpenAI"), sys.executable, "-c")
    assert "CompletionUsage(" in done.stdout


def test_the_real_upstream_block_replaces_the_mock() -> None:
    """Done as the README says (the block replaces ``upstreams``), the file is valid and
    every model goes to OpenAI."""
    config = yaml.safe_load((ROOT / "config" / "gateway.yaml").read_text())
    config.update(yaml.safe_load(_block('base_url: "https://api.openai.com/v1"').text))
    settings = parse_settings(yaml.safe_dump(config), "gateway.yaml",
                              env={"OPENAI_API_KEY": "sk-test"})
    (upstream,) = settings.upstreams
    assert (upstream.name, upstream.base_url) == ("openai", "https://api.openai.com/v1")


def test_the_admin_api_blocks_curl_then_python(site: Site) -> None:
    """In the README's order: curl creates a budget and reads the report; the Python client
    block then runs as a script."""
    curl = site.run(_block("curl -s"), "bash", "-c")
    assert '"name":"acme-cap"' in curl.stdout.replace(" ", "") and '"error"' not in curl.stdout
    done = site.run(_block("from gateway.client import"), sys.executable, "-c")
    assert "budget_name_taken" in done.stdout and "Traceback" not in done.stderr


def test_the_library_block_prints_what_the_readme_shows() -> None:
    """Seed: "tracker := cost.NewInMemoryTracker(cost.WithMaxEntries(50000))" ...
    "fmt.Printf("24h cost: $%.4f over %d calls\\n", ...)", and the checker's example: the
    README's Python translation prints the output shown beneath it."""
    code = _block("from gateway import cost").text
    shown = _block("24h cost: $0.0032 over 1 calls").text
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=RUN_S, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == shown
