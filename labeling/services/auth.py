"""Login throttling: failed attempts are counted per username and per client address in Django's
cache, in a fixed window that starts with the first failure. At the limit, logins are refused,
even with the right password, until the window ends; a successful login clears the username's count.

The address limit is separate and higher (settings.PAIRWISE_LOGIN_MAX_FAILURES_PER_IP) so that one
noisy user behind an office NAT does not lock everyone else out, while a sweep over many usernames
from one address still stops.
"""
from __future__ import annotations

import hashlib
import math
import time

from django.conf import settings
from django.core.cache import cache

PREFIX = "pairwise:login-failures"


def _keys(*, username: str, ip: str) -> list[tuple[str, int]]:
    # Hashed: usernames may hold characters some cache backends refuse in keys.
    user = hashlib.sha256(username.strip().casefold().encode()).hexdigest()
    return [
        (f"{PREFIX}:user:{user}", settings.PAIRWISE_LOGIN_MAX_FAILURES),
        (f"{PREFIX}:ip:{ip}", settings.PAIRWISE_LOGIN_MAX_FAILURES_PER_IP),
    ]


def login_attempt_check(*, username: str, ip: str) -> int:
    """Seconds until this username and address may try again; 0 when a login may be attempted."""
    now = time.time()
    wait = 0.0
    for key, limit in _keys(username=username, ip=ip):
        if cache.get(key, 0) >= limit:
            wait = max(wait, cache.get(f"{key}:until", now + 1) - now, 1)
    return math.ceil(wait)


def login_attempt_record(*, username: str, ip: str, success: bool) -> None:
    """Count a failed attempt against the username and the address; a success clears the username."""
    keys = _keys(username=username, ip=ip)
    if success:
        user_key = keys[0][0]
        cache.delete_many([user_key, f"{user_key}:until"])
        return
    window = settings.PAIRWISE_LOGIN_WINDOW_S
    for key, _ in keys:
        cache.add(f"{key}:until", time.time() + window, window)
        cache.add(key, 0, window)
        try:
            cache.incr(key)  # atomic on Redis and Memcached, locked in LocMem
        except ValueError:  # the window ended between add and incr
            cache.set(key, 1, window)


def login_refusal_message(*, wait_s: int) -> str:
    minutes = max(1, math.ceil(wait_s / 60))
    return f"Too many failed login attempts. Try again in {minutes} minute{'s' if minutes != 1 else ''}."
