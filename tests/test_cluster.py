"""The Redis store on a real Redis Cluster (3 masters + 3 replicas on loopback): slots, failover, resharding.

The store contract tests (tests/test_store.py, test_langchain.py) also run on this session-wide cluster
(tests/conftest.py) through the `store_url` fixture.
"""

from __future__ import annotations

import pytest

from optimem.errors import ConfigError, StoreError
from optimem.store import StoredPage, open_store
from optimem.store.redis_cluster import parse_cluster_url


@pytest.fixture
def cluster(redis_cluster):
    """The session's cluster (conftest). The trials below leave it whole: a killed master is restarted
    and rejoins as a replica, resharded slots stay served, so the store tests that run after these run
    on a cluster whose topology has changed, as a long-lived client would."""
    return redis_cluster


def test_cluster_url_parsing():
    o = parse_cluster_url("redis+cluster://u:p%40w@10.0.0.1:7000,10.0.0.2:7001/?prefix=app&ttl=60&durable=1&wait_ms=500")
    assert o["seeds"] == [("10.0.0.1", 7000), ("10.0.0.2", 7001)] and o["username"] == "u" and o["password"] == "p@w"
    assert o["durable"] == 1 and o["wait_ms"] == 500 and "prefix=app" in o["store_query"] and "durable" not in o["store_query"]
    assert parse_cluster_url("rediss+cluster://h:1")["ssl"]
    for bad in ("redis+cluster://h/", "redis+cluster://h:x/", "redis+cluster://h:1/3", "redis+cluster://h:1/?durable=x",
                "redis+cluster://h:1/?wait_ms=0", "redis+cluster://h:99999/", "redis+cluster://h:1/?retry_s=nan",
                "redis+cluster://h:1/?timeout=0", "redis://h:1/"):
        with pytest.raises(ConfigError):
            parse_cluster_url(bad)


def test_unreachable_cluster_is_a_store_error():
    from optimem.bench.redis_local import free_port_pair

    with pytest.raises(StoreError, match="cannot reach Redis Cluster"):
        open_store(f"redis+cluster://127.0.0.1:{free_port_pair()}/")


def _spy_commands(monkeypatch) -> list[tuple]:
    """Every command sent through redis-py, by the cluster client or a node's plain client, pipelines and
    transactions included: (args, "cluster" or "node")."""
    import redis
    from redis.client import Pipeline
    from redis.cluster import ClusterPipeline, RedisCluster

    sent: list[tuple] = []
    for cls, via in ((redis.Redis, "node"), (Pipeline, "node"), (RedisCluster, "cluster"), (ClusterPipeline, "cluster")):
        real = cls.execute_command

        def spy(self, *args, _real=real, _via=via, **kw):
            sent.append((args, _via))
            return _real(self, *args, **kw)

        monkeypatch.setattr(cls, "execute_command", spy)
    return sent


def test_every_command_stays_in_the_session_slot(cluster, monkeypatch):
    """Scripts, transactions and plain commands name only one session's keys: one slot per session, for
    every store operation (a cross-slot script or transaction would also be refused by Redis). And they
    go straight to the slot's master through its plain client, not through redis-py's cluster router."""
    from redis.crc import key_slot

    st = open_store(cluster.url + "?prefix=slots")
    sent = _spy_commands(monkeypatch)
    page = StoredPage(0, [{"turn": 0, "start": 0, "end": 1}], "x", 1, "h0", png=b"p")
    for s in ("alice", "bob", "c.d-e_f"):
        st.append_turns(s, [{"role": "user", "content": "x", "key": "k1"}, {"role": "assistant", "content": "y"}])
        st.set_pinned(s, 1, True)
        st.put_pages(s, [page], meta={"a": 1})
        assert st.seal_pages(s, [StoredPage(1, page.spans, "y", 1, "h1", png=b"q")], expect=1)
        first = st.allocate_pages(s, 2)
        st.put_doc(s, "doc", {"first_page": first, "pages": 2})
        st.set_floors(s, {0: "small"}, ladder=["large", "base", "small", "tiny"])
        st.update_meta(s, {"b": 2})
        st.put_cache(s, "h0|m|tiny", b"blob")
        st.get_turns(s), st.get_pages(s), st.snapshot(s), st.get_docs(s), st.stats(s)
        st.delete_pages(s, [1])
        assert st.delete_doc(s, "doc")
    assert len(sent) > 50
    routed = [a[:2] for a, via in sent if via == "cluster" and a[0] != "CONFIG GET"]  # the persistence check
    assert not routed, routed[:5]
    for args, _ in sent:
        name = str(args[0]).upper()
        if name in ("EVALSHA", "EVAL"):
            keys = args[3:3 + int(args[2])]
        elif name in ("SCRIPT LOAD", "SCAN", "WAIT", "CONFIG GET", "MULTI", "EXEC", "UNWATCH"):
            continue
        elif name in ("WATCH", "DEL"):
            keys = args[1:]
        else:
            keys = args[1:2]
        sessions = {k.split(":")[1] for k in (x.decode() if isinstance(x, bytes) else x for x in keys)}
        slots = {key_slot(k.encode() if isinstance(k, str) else k) for k in keys}
        assert len(slots) == 1 and len(sessions) == 1, f"{args[:4]} spans slots {slots}"
    assert sorted(st.list_sessions()) == ["alice", "bob", "c.d-e_f"]
    st.delete_session("bob")
    assert st.list_sessions() == ["alice", "c.d-e_f"] and st.count_turns("bob") == 0


def test_stale_slot_map_is_followed_not_surfaced(cluster, monkeypatch):
    """A slot map pointing a session at the wrong master (as after a reshard or failover the client has not
    seen): the direct call gets MOVED, is retried through the cluster client, which follows the redirect and
    fixes the map; nothing surfaces, nothing is stored twice, and the next call goes direct again."""
    from redis.crc import key_slot

    st = open_store(cluster.url + "?prefix=stale")
    st.append_turns("s1", [{"role": "user", "content": "a"}])
    nm = st.client.nodes_manager
    slot = key_slot(b"{s1}")
    right = nm.slots_cache[slot][0]
    wrong = next(n for n in nm.nodes_cache.values() if n.server_type == "primary" and n.name != right.name)
    nm.slots_cache[slot] = [wrong]
    sent = _spy_commands(monkeypatch)
    assert st.append_turns("s1", [{"role": "user", "content": "b"}]) == [1]  # unkeyed: not resent blindly
    evals = [via for a, via in sent if a[0] == "EVALSHA"]
    assert evals[0] == "node" and "cluster" in evals, evals  # refused by the wrong master, then followed
    assert nm.slots_cache[slot][0].name == right.name
    sent.clear()
    assert [t.content for t in st.get_turns("s1")] == ["a", "b"]
    assert {via for _, via in sent} == {"node"}


def test_list_sessions_spans_every_master_and_no_other_prefix(cluster):
    st = open_store(cluster.url + "?prefix=lst")
    other = open_store(cluster.url + "?prefix=lst2")
    names = [f"u{i}" for i in range(60)]
    for n in names:
        st.append_turns(n, [{"role": "user", "content": n}])
    other.append_turns("intruder", [{"role": "user", "content": "x"}])
    masters = {cluster.master_of_slot(st.client.keyslot(f"lst:{{{n}}}:meta")) for n in names}
    assert len(masters) == 3  # the sessions really are spread over the three masters
    assert st.list_sessions() == sorted(names)
    assert other.list_sessions() == ["intruder"]


def test_durable_writes_wait_for_a_replica(cluster, monkeypatch):
    from redis.client import Pipeline

    st = open_store(cluster.url + "?prefix=dur&durable=1&wait_ms=2000")
    # the first append also loads the script on that master (NOSCRIPT, SCRIPT LOAD, the pipeline again)
    assert st.append_turns("d", [{"role": "user", "content": "x"}]) == [0]
    sent = _spy_commands(monkeypatch)
    executes = []
    real_execute = Pipeline.execute
    monkeypatch.setattr(Pipeline, "execute", lambda self, *a, **kw: executes.append(1) or real_execute(self, *a, **kw))
    assert st.append_turns("d", [{"role": "user", "content": "x", "key": "k"}]) == [1]
    # the append, the marker write and WAIT: one pipeline, one round trip, straight to the slot's master
    assert [a[0] for a, _ in sent] == ["EVALSHA", "SET", "WAIT"] and {v for _, v in sent} == {"node"}, sent
    assert len(executes) == 1
    monkeypatch.undo()
    assert st.append_turns("d", [{"role": "user", "content": "x", "key": "k"}]) == [1]  # a no-op retry waits too
    st.put_pages("d", [StoredPage(0, [{"turn": 0, "start": 0, "end": 1}], "x", 1, "h0", png=b"p")])
    # asking for more replicas than exist: applied on the master, but the caller is told it is not durable
    st3 = open_store(cluster.url + "?prefix=dur&durable=3&wait_ms=200")
    with pytest.raises(StoreError, match="replicas confirmed"):
        st3.append_turns("d", [{"role": "user", "content": "y"}])
    assert [t.content for t in st.get_turns("d")] == ["x", "x", "y"]


def test_failover_kill9_master_async_replication(cluster):
    from optimem.bench.store import failover_trial

    r = failover_trial(cluster, durable=0, tag="ta", max_s=20)
    assert r["promoted_port"] not in (None, r["killed_port"]), r
    assert r["writes_resumed_after_s"] is not None and r["writes_resumed_after_s"] < 15, r
    assert r["duplicates"] == 0, r
    assert r["acknowledged"] > 50, r
    # asynchronous replication: a loss is possible by design; the bench reports it (benchmarks/results/store.json)


def test_failover_kill9_master_durable_loses_nothing(cluster):
    from optimem.bench.store import failover_trial

    r = failover_trial(cluster, durable=1, tag="tb", max_s=20)
    assert r["writes_resumed_after_s"] is not None and r["writes_resumed_after_s"] < 15, r
    assert r["lost_acknowledged"] == 0 and r["duplicates"] == 0, r
    assert r["acknowledged"] > 50, r


def test_resharding_under_writes_surfaces_no_error_and_loses_nothing(cluster):
    from optimem.bench.store import reshard_trial

    r = reshard_trial(cluster, sessions=6, slots=200)
    assert r["sessions_now_on_target"], r
    assert r["errors_surfaced"] == 0, r
    assert r["lost_acknowledged"] == 0 and r["duplicates"] == 0, r
    assert r["operations"] > 50, r


def test_bench_load_rounds_runs_every_store_each_round(cluster):
    """`optimem bench store`'s load part, tiny: one writer process, two stores taking turns for two rounds."""
    from optimem.bench.store import load_rounds, summarize

    pids = [n.proc.pid for n in cluster.nodes]
    configs = [{"store": "a", "url": cluster.url + "?prefix=lra", "pids": pids},
               {"store": "b", "url": cluster.url + "?prefix=lrb&durable=1", "pids": pids}]
    rows = load_rounds(configs, writers=1, threads=2, sessions_per_writer=2, duration=0.3, warmup=0.1, repeat=2,
                       warm_turns=5, budget=4096, tag="lr")
    assert [(r["store"], r["round"]) for r in rows] == [("a", 0), ("b", 0), ("b", 1), ("a", 1)]
    assert all(r["adds_per_s"] > 0 and r["chat_turns_per_s"] > 0 and r["client_cpu_per_s_adds"] > 0 for r in rows), rows
    table = summarize([{"writers": 1, "threads": 2, **r} for r in rows], base="a")
    assert [t["rounds"] for t in table] == [2, 2] and table[0]["adds_vs_a_same_round"] == [1.0, 1.0]
    assert open_store(cluster.url + "?prefix=lrb").count_turns("lr-w0-s1-t1-a") > 5  # both threads wrote



def test_cluster_without_replicas_serves_the_store():
    """`optimem bench store`'s "cluster 3+0" row: three masters, no replicas, healthy and serving; the
    store works there unchanged, and durable=1 says no replica confirmed instead of hanging."""
    from optimem.bench.redis_local import LocalRedisCluster
    from optimem.bench.store import _slot_of

    bare = LocalRedisCluster(replicas=0).start(30)
    try:
        topo = bare.topology()
        assert len(bare.nodes) == 3 and len(bare.masters()) == 3 and all(r["role"] == "master" for r in topo), topo
        st = open_store(bare.url + "?prefix=bare")
        sessions = [f"s{i}" for i in range(12)]
        for s in sessions:
            st.append_turns(s, [{"role": "user", "content": f"hi {s}", "key": f"{s}:0"}])
        assert {bare.master_of_slot(_slot_of(s, "bare")) for s in sessions} == set(bare.masters())
        assert all(st.get_turns(s)[0].content == f"hi {s}" for s in sessions)
        st.close()
        durable = open_store(bare.url + "?prefix=bare&durable=1&wait_ms=100")
        with pytest.raises(StoreError, match="replica"):
            durable.append_turns("s0", [{"role": "user", "content": "x", "key": "s0:1"}])
        durable.close()
    finally:
        bare.cleanup()
