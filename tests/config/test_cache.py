import uuid

from config.cache import RedisCache


def test_redis_cache_round_trips_and_reuses_one_client_per_pool():
    cache = RedisCache("redis://127.0.0.1:6379/14", {})
    key = f"pairwise-test-{uuid.uuid4().hex}"
    cache.set(key, {"a": [1, 2]}, 30)
    assert cache.get(key) == {"a": [1, 2]}
    assert cache._cache.get_client(write=True) is cache._cache.get_client(write=False)
    cache.delete(key)
    assert cache.get(key) is None
