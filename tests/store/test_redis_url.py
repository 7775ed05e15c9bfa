"""The store URL as operators write it: a cluster named by several seed nodes, any of which may
be down when the gateway starts."""

from __future__ import annotations

from gateway.cost.windows import HOUR
from gateway.store.base import Line
from gateway.store.redis import RedisStore, cluster_seeds
from tests.procs import free_port


def test_cluster_seeds_keep_auth_path_and_query_for_the_first_node() -> None:
    node, seeds = cluster_seeds("redis+cluster://u:pw@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002/0"
                                "?socket_timeout=1")
    assert node == "redis://u:pw@10.0.0.1:7000/0?socket_timeout=1"
    assert [(s.host, s.port) for s in seeds] == [("10.0.0.2", 7001), ("::1", 7002)]
    assert cluster_seeds("redis+cluster://h:7000") == ("redis://h:7000", [])


async def test_a_seed_node_that_is_down_is_passed_over(cluster_url: str) -> None:
    live = cluster_url.removeprefix("redis+cluster://")
    store = RedisStore.from_url(f"redis+cluster://127.0.0.1:{free_port()},{live}")
    try:
        await store.connect()
        line = Line("{seeds}:b:cap:max_tokens_per_hour", HOUR, 100, 10)
        assert (await store.reserve("seeds", "r1", [line], 1_000.0, 60)).ok
        assert await store.peek([line], 1_000.0) == [10]
    finally:
        await store.close()


def test_store_urls_split_as_written_whatever_the_python() -> None:
    """Debian's Python 3.11 refuses a netloc with text before a '[' ("Invalid IPv6 URL"); a
    cluster's seed list is such a netloc, so store URLs are split by ``gateway.store.url``,
    never by ``urlsplit``, from the configuration check to the connection."""
    from gateway.settings.load import parse_settings
    from gateway.store import url

    seeds = "redis+cluster://u:pw@10.0.0.1:7000,[::1]:7002/0?max_connections=4#x"
    parts = url.split(seeds)
    assert (parts.scheme, parts.netloc, parts.path, parts.query, parts.fragment) == (
        "redis+cluster", "u:pw@10.0.0.1:7000,[::1]:7002", "/0", "max_connections=4", "x")
    assert url.join(parts) == seeds
    text = ('upstreams: {u: {base_url: "http://127.0.0.1:9/v1", api_key: k}}\n'
            f'store: "{seeds}"\n')
    assert parse_settings(text, "g.yaml", env={}).store == seeds
    store = RedisStore.from_url(seeds)
    assert store is not None
