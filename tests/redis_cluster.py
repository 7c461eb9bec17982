"""The tests' Redis Cluster: `optimem.bench.redis_local.LocalRedisCluster` (3 masters + 3 replicas on loopback,
created with `redis-cli --cluster create`), or a clean skip where Debian's redis-server is not installed."""

from __future__ import annotations

import shutil

import pytest

from optimem.bench.redis_local import LocalRedisCluster


def start_cluster_or_skip(node_timeout_ms: int = 1000) -> LocalRedisCluster:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server/redis-cli are not installed (bash scripts/setup.sh --dev installs them)")
    return LocalRedisCluster(node_timeout_ms=node_timeout_ms).start()
