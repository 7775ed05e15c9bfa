"""The request path's script calls on the store's own connection: answers in order, one write per
turn, redis-py's way whenever the lane cannot make a call, and a written call never sent twice."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.store import resp_lane
from gateway.store.coalesce import Coalescer
from gateway.store.redis import RedisStore
from gateway.store.resp_lane import RespLane, Unavailable
from tests.procs import free_port, stop
from tests.servers import start_redis

INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
FAIL = "return redis.error_reply('ERR refused by the script')"


def _counting(client: aioredis.Redis) -> list[str]:
    """Every call that goes redis-py's way (a pipeline or a script call), by kind."""
    ways: list[str] = []
    real_pipeline = client.pipeline

    def pipeline(*args: object, **kwargs: object) -> object:
        ways.append("pipeline")
        return real_pipeline(*args, **kwargs)  # type: ignore[arg-type]

    client.pipeline = pipeline  # type: ignore[method-assign]
    return ways


async def test_calls_of_one_turn_go_in_one_write_and_each_gets_its_answer(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    script, failing = client.register_script(INCR), client.register_script(FAIL)
    await script(keys=["warm"], args=[1])
    await client.script_load(FAIL)
    lane = RespLane.of(client.connection_pool)
    batch = Coalescer(client, lane)
    ways = _counting(client)
    writes: list[int] = []
    real_send = resp_lane._Protocol.send

    def send(self: resp_lane._Protocol, commands: list[resp_lane.Command]) -> object:
        writes.append(len(commands))
        return real_send(self, commands)

    monkeypatch.setattr(resp_lane._Protocol, "send", send)
    calls = [batch.call(script, [f"k{i % 3}"], [i]) for i in range(30)]
    calls.append(batch.call(failing, ["k0"], []))
    *results, refused = await asyncio.gather(*calls, return_exceptions=True)
    assert sorted(await client.mget("k0", "k1", "k2")) == sorted(
        [str(sum(i for i in range(30) if i % 3 == r)).encode() for r in range(3)])
    assert all(isinstance(r, int) for r in results)
    assert isinstance(refused, ResponseError) and "refused by the script" in str(refused)
    assert writes == [31], "31 calls in one turn: one write on the lane"
    assert ways == [], "nothing went redis-py's way"
    batch.close()
    await client.aclose()


async def test_a_script_redis_lost_goes_redis_pys_way_once(redis_url: str) -> None:
    """After a restart Redis answers NOSCRIPT (it ran nothing): redis-py loads the script and
    makes the call; the next calls are the lane's again."""
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    script = client.register_script(INCR)
    batch = Coalescer(client, RespLane.of(client.connection_pool))
    assert await batch.call(script, ["n"], [1]) == 1  # never loaded: NOSCRIPT, then redis-py
    await client.script_flush()
    assert sorted(await asyncio.gather(*(batch.call(script, ["n"], [1]) for _ in range(5)))) == [
        2, 3, 4, 5, 6]
    ways = _counting(client)
    assert await batch.call(script, ["n"], [1]) == 7
    assert ways == []
    batch.close()
    await client.aclose()


async def test_a_killed_connection_is_replaced_for_the_next_call(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    script = client.register_script(INCR)
    await script(keys=["warm"], args=[1])
    lane = RespLane.of(client.connection_pool)
    (lane_id,) = await lane.send([("CLIENT", "ID")])
    assert lane._protocol is not None and lane._protocol._transport is not None
    sock = lane._protocol._transport.get_extra_info("socket")
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1  # as redis-py's
    assert await client.client_kill_filter(_id=lane_id) == 1
    await asyncio.wait_for(lane._protocol.closed.wait(), 10)  # learnt as the loop runs
    (again,) = await lane.send([("EVALSHA", script.sha, 1, "k", 1)])
    assert isinstance(again, int)
    (new_id,) = await lane.send([("CLIENT", "ID")])
    assert new_id != lane_id
    lane.close()
    await client.aclose()


@contextlib.asynccontextmanager
async def silent_server(close_after_read: bool) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A server that reads commands and never answers (or closes once it has read some)."""
    received: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(65536))
        if close_after_read:
            writer.close()
            return
        await reader.read()  # until the client goes

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, received
    finally:
        server.close()


async def test_a_call_written_on_a_connection_that_fails_is_not_sent_again() -> None:
    """It may have run: it fails (a store error for the caller), never sent twice."""
    async with silent_server(close_after_read=True) as (port, received):
        lane = RespLane("127.0.0.1", port)
        with pytest.raises(RedisConnectionError):
            await lane.send([("EVALSHA", "0" * 40, 1, "k", 1)])
        # the server read it before closing, so before the call failed; a resend would be
        # made before that too (the lane never sends a call again later)
        assert len(received) == 1 and received[0].count(b"EVALSHA") == 1
        lane.close()


async def test_a_server_that_does_not_answer_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resp_lane, "REPLY_TIMEOUT_S", 0.2)
    async with silent_server(close_after_read=False) as (port, _):
        lane = RespLane("127.0.0.1", port)
        started = asyncio.get_running_loop().time()
        with pytest.raises(RedisTimeoutError):
            await lane.send([("PING",)])
        assert asyncio.get_running_loop().time() - started < 5
        lane.close()


async def test_an_unreachable_server_leaves_calls_to_redis_py() -> None:
    """Nothing was sent: the batch goes redis-py's way, which fails as it always has; the lane
    does not try again for a moment."""
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    lane = RespLane.of(client.connection_pool)
    with pytest.raises(Unavailable):
        await lane.send([("PING",)])
    with pytest.raises(Unavailable, match="a moment ago"):
        await lane.send([("PING",)])
    script = client.register_script(INCR)
    script.sha = "0" * 40
    outcomes = await asyncio.gather(*(Coalescer(client, lane).call(script, ["k"], [1])
                                      for _ in range(3)), return_exceptions=True)
    assert all(isinstance(o, RedisConnectionError) for o in outcomes)
    await client.aclose()


async def test_the_handshake_authenticates_and_selects_the_database(tmp_path: Path) -> None:
    port = free_port()
    proc = start_redis(tmp_path, port, "--requirepass", "s3cret-pass")
    try:
        store = RedisStore.from_url(f"redis://:s3cret-pass@127.0.0.1:{port}/3")
        assert store._batch is not None and store._batch._lane is not None
        lane = store._batch._lane
        assert await lane.send([("SET", "where", "lane")]) == [b"OK"]
        direct = aioredis.Redis(port=port, password="s3cret-pass", db=3)
        assert await direct.get("where") == b"lane"
        await direct.aclose()
        wrong = RespLane("127.0.0.1", port, password="wrong-pass")
        with pytest.raises(Unavailable, match="refused the handshake"):
            await wrong.send([("PING",)])
        await store.close()
    finally:
        stop(proc)


async def test_tls_and_cluster_stores_have_no_lane() -> None:
    tls = RedisStore.from_url("rediss://127.0.0.1:1/0")._batch
    assert tls is not None and tls._lane is None
    assert RedisStore.from_url("redis+cluster://127.0.0.1:1")._batch is None
