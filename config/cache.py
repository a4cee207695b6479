"""Django's Redis cache with one redis-py client per connection pool.

Django builds a new redis.Redis object for every cache call, and its constructor fills a table of
about 170 response callbacks: that cost more CPU than the network round trip. A redis.Redis is
safe to share between threads (each command takes a connection from the pool)."""
from django.core.cache.backends import redis


class RedisCacheClient(redis.RedisCacheClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clients = {}

    def get_client(self, key=None, *, write=False):
        pool = self._get_connection_pool(write)
        client = self._clients.get(pool)
        if client is None:
            client = self._clients.setdefault(pool, self._client(connection_pool=pool))
        return client


class RedisCache(redis.RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = RedisCacheClient
