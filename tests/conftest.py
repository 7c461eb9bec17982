from __future__ import annotations

import shutil

import pytest


from optimem.bench.redis_local import LocalRedis


@pytest.fixture(scope="session")
def redis_server():
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (bash scripts/setup.sh --dev installs it)")
    server = LocalRedis(persistence="none").start()  # the store's no-persistence warning is tested on it
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def redis_cluster():
    """A Redis Cluster (3 masters + 3 replicas) on loopback for the whole run; see tests/redis_cluster.py."""
    from redis_cluster import start_cluster_or_skip  # tests/redis_cluster.py

    cluster = start_cluster_or_skip()
    yield cluster
    cluster.cleanup()


@pytest.fixture(params=["sqlite", "redis", "cluster"])
def store_url(request, tmp_path):
    """A fresh store URL of each kind: a SQLite file, and a unique prefix on the shared redis-server and on
    the shared Redis Cluster."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    if request.param == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        return f"{cluster.url}?prefix=t{abs(hash(request.node.nodeid)) % 10**9}"
    server = request.getfixturevalue("redis_server")
    return f"{server.url}?prefix=t{abs(hash(request.node.nodeid)) % 10**9}"
