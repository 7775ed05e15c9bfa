"""Stored and background responses through the official openai SDK, on real processes: a
response is its tenant's alone, a background one is charged when it ends, exactly as billed."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest

from tests.procs import Proc, gateway_process, mock_upstream

SECRETS = {"alpha": "sk-alpha-owner", "beta": "sk-beta-other"}
POLL_DEADLINE_S = 20.0


@dataclass
class Rig:
    mock: Proc
    gateway: Proc

    def client(self, tenant: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gateway.url + "/v1", api_key=SECRETS[tenant],
                             max_retries=0, timeout=20.0)

    def report(self, tenant: str) -> dict[str, Any]:
        request = urllib.request.Request(
            self.gateway.url + "/api/client/v1/spend/report",
            headers={"Authorization": f"Bearer {SECRETS[tenant]}"})
        with urllib.request.urlopen(request, timeout=5) as resp:
            body: dict[str, Any] = json.loads(resp.read())
            return body


def _config(mock: Proc) -> str:
    tenants = "\n".join(
        f"  {t}:\n    keys:\n      - {{name: k, sha256: \"{hashlib.sha256(s.encode()).hexdigest()}"
        f"\", role: admin}}" for t, s in SECRETS.items())
    return (f'store: "memory://"\nupstreams:\n  worst:\n    base_url: "{mock.url}/v1"\n'
            f"    api_key: sk-up\n    timeout_s: 10\ntenants:\n{tenants}\n")


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("owned")
    with mock_upstream(tmp, worst=True) as mock:
        config = tmp / "gateway.yaml"
        config.write_text(_config(mock))
        with gateway_process(config, tmp / "gateway.log") as gateway:
            yield Rig(mock, gateway)


def test_another_tenant_gets_openais_404_by_every_route(rig: Rig) -> None:
    alpha, beta = rig.client("alpha"), rig.client("beta")
    created = alpha.responses.create(model="gpt-4o-mini", input="hello", max_output_tokens=20)
    assert alpha.responses.retrieve(created.id).id == created.id
    assert alpha.responses.input_items.list(created.id).data
    for attempt in (
        lambda: beta.responses.retrieve(created.id),
        lambda: beta.responses.delete(created.id),
        lambda: beta.responses.cancel(created.id),
        lambda: beta.responses.input_items.list(created.id),
    ):
        with pytest.raises(openai.NotFoundError) as error:
            attempt()
        assert f"No response found with id '{created.id}'" in str(error.value)
    with pytest.raises(openai.NotFoundError) as error:
        beta.responses.create(model="gpt-4o-mini", input="and?", max_output_tokens=20,
                              previous_response_id=created.id)
    assert error.value.code == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError):
        alpha.responses.retrieve("resp_never_made")
    assert alpha.responses.retrieve(created.id).id == created.id  # beta's tries changed nothing


def test_a_tenant_continues_and_deletes_its_own(rig: Rig) -> None:
    alpha = rig.client("alpha")
    first = alpha.responses.create(model="gpt-4o-mini", input="hello", max_output_tokens=20)
    second = alpha.responses.create(model="gpt-4o-mini", input="go on", max_output_tokens=20,
                                    previous_response_id=first.id)
    assert second.usage is not None and first.usage is not None
    # the upstream bills the earlier turn's input and output again, as context
    assert second.usage.input_tokens >= first.usage.input_tokens + first.usage.output_tokens
    deleted = alpha.responses.delete(second.id)
    assert deleted is None or getattr(deleted, "deleted", True)
    with pytest.raises(openai.NotFoundError):
        alpha.responses.retrieve(second.id)


def test_background_is_charged_when_it_ends_exactly_as_billed(
    rig: Rig, capsys: pytest.CaptureFixture[str]
) -> None:
    alpha = rig.client("alpha")
    before = rig.report("alpha")
    created = alpha.responses.create(model="gpt-5-mini", input="research this",
                                     max_output_tokens=300, background=True,
                                     metadata={"mock_background_s": "0.5"})
    assert created.status in ("queued", "in_progress")
    final = _poll(alpha, created.id)
    # worst mode writes up to the cap, so it ends "incomplete" (max_output_tokens): billed
    assert final.status in ("completed", "incomplete") and final.usage is not None
    report = _report_after(rig, before, requests=1)
    assert report["total_input_tokens"] - before["total_input_tokens"] == final.usage.input_tokens
    assert (report["total_output_tokens"] - before["total_output_tokens"]
            == final.usage.output_tokens)
    with capsys.disabled():
        print(f"\n[background] queued -> {final.status}; charged {final.usage.input_tokens} "
              f"input + {final.usage.output_tokens} output tokens, as billed")


def test_a_cancelled_background_response_is_charged_what_it_billed(rig: Rig) -> None:
    alpha = rig.client("alpha")
    before = rig.report("alpha")
    created = alpha.responses.create(model="gpt-5-mini", input="long research",
                                     max_output_tokens=5000, background=True,
                                     metadata={"mock_background_s": "5"})
    _poll(alpha, created.id, until=("in_progress",))  # running: a cancel now bills something
    cancelled = alpha.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    report = _report_after(rig, before, requests=1)
    charged_out = report["total_output_tokens"] - before["total_output_tokens"]
    assert cancelled.usage is not None
    assert charged_out == cancelled.usage.output_tokens < 5000


def _poll(client: openai.OpenAI, oid: str,
          until: tuple[str, ...] = ("completed", "incomplete", "failed", "cancelled")) -> Any:
    deadline = time.monotonic() + POLL_DEADLINE_S
    while True:
        found = client.responses.retrieve(oid)
        if found.status in until or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _report_after(rig: Rig, before: dict[str, Any], requests: int) -> dict[str, Any]:
    """The gateway settles a background response on its own poll, shortly after it ends."""
    deadline = time.monotonic() + POLL_DEADLINE_S
    while True:
        report = rig.report("alpha")
        if report["requests"] - before["requests"] >= requests or time.monotonic() > deadline:
            return report
        time.sleep(0.05)
