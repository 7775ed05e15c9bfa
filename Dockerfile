# syntax=docker/dockerfile:1
# The gateway as a small non-root image. Build and run (README, "Container"):
#   docker build -t llm-budget-gateway .
#   docker run -p 8080:8080 -e OPENAI_API_KEY \
#     -v "$PWD/my-gateway.yaml:/etc/gateway/gateway.yaml:ro" llm-budget-gateway
# or, with Redis, `docker compose up` (compose.yaml, config/gateway.docker.yaml).
# tests/test_container.py runs this file's build RUN, ENTRYPOINT + CMD and HEALTHCHECK in a
# clean venv, and hadolint on it.

# Build stage: the project's wheel and every dependency's, then a venv installed from them only.
# No compiler here on purpose: every dependency ships cp311 manylinux wheels for amd64 and arm64,
# and two of them (orjson, tiktoken) would need a Rust toolchain, not just gcc, from source.
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    WHEELS=/wheels
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
# The uvloop extra: `gateway serve` runs its event loops on uvloop when it is installed.
RUN python -m pip wheel --no-cache-dir --wheel-dir "$WHEELS" ".[uvloop]" \
 && python -m venv --without-pip "$VIRTUAL_ENV" \
 && python -m pip --python "$VIRTUAL_ENV/bin/python" install --no-cache-dir --no-index \
      --find-links "$WHEELS" "llm-budget-gateway[uvloop]"

# Runtime stage: the slim base and the venv, nothing else (no pip in the venv, no wheels).
FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --no-log-init --uid 10001 --gid gateway --no-create-home \
      --home-dir /var/lib/gateway --shell /usr/sbin/nologin gateway \
 && install -d -o gateway -g gateway -m 0750 /var/lib/gateway
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GATEWAY_CONFIG=/etc/gateway/gateway.yaml
# the user's own directory, e.g. for `store: "memory://?persist=/var/lib/gateway/state.json"`
WORKDIR /var/lib/gateway
USER 10001:10001
EXPOSE 8080
# SIGTERM: the gateway stops accepting, finishes the requests in flight, settles and exits;
# give `docker stop -t` (compose: stop_grace_period) more than the gateway's grace period.
STOPSIGNAL SIGTERM
# slim has no curl: the venv's python asks /healthz (liveness) and exits 0 only on a 200.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["gateway"]
CMD ["serve", "--config", "/etc/gateway/gateway.yaml", "--host", "0.0.0.0", "--port", "8080"]
