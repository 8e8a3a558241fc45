"""kombu's Redis transport, keeping one Redis client per connection pool instead of building one per command.

kombu builds a new ``redis.Redis`` for every delivery's and every acknowledgement's bookkeeping; building one
costs more CPU than the commands it sends (redis-py fills a table of about 170 reply parsers each time), about
a quarter of a worker's own CPU per no-op job. A client is only a handle on its connection pool, taking a
connection per command, so sharing it is safe; a new pool (after a reconnect) gets a new client.

Fence: this overrides kombu's private ``redis.Channel._create_client`` (kombu 5.4 to 5.7; pyproject bounds kombu
below 5.8); ``missing_upstream()`` lists what an upgrade removed.

Upstream report (performance), to file with kombu::

    kombu.transport.redis.Channel builds a new redis.Redis client for every delivery's and every
    acknowledgement's bookkeeping (Channel.client / _create_client). Building a client costs more CPU than
    the commands it sends (redis-py fills a table of ~170 reply parsers each time): about a quarter of a
    worker's CPU per no-op task. A client is a handle on its connection pool, so one client per pool could be
    kept and reused.
"""

from __future__ import annotations

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis

ALIAS = "pacsnode-redis"


class Channel(kombu_redis.Channel):
    _shared_client: tuple[object, object] | None = None  # (pool, client built on it)

    def _create_client(self, asynchronous: bool = False):  # type: ignore[no-untyped-def]
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool
        if self._shared_client is None or self._shared_client[0] is not pool:
            self._shared_client = (pool, super()._create_client())
        return self._shared_client[1]


class Transport(kombu_redis.Transport):
    Channel = Channel


def transport_url(broker_url: str) -> str:
    """``broker_url`` for this transport when it is a plain ``redis://`` URL; other URLs (TLS, Sentinel) as given."""
    if broker_url.startswith("redis://"):
        return f"{ALIAS}://" + broker_url.removeprefix("redis://")
    return broker_url


TRANSPORT_ALIASES[ALIAS] = f"{__name__}:Transport"


def missing_upstream() -> list[str]:
    """What this fence overrides that the installed kombu no longer has (empty when all is there)."""
    return [] if callable(getattr(kombu_redis.Channel, "_create_client", None)) else [
        "kombu.transport.redis.Channel._create_client"]
