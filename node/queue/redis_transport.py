"""kombu's Redis transport, keeping one Redis client per connection pool instead of building one per command.

kombu builds a new ``redis.Redis`` for every delivery's and every acknowledgement's bookkeeping; building one
costs more CPU than the commands it sends (redis-py fills a table of about 170 reply parsers each time), about
a quarter of a worker's own CPU per no-op job. A client is only a handle on its connection pool, taking a
connection per command, so sharing it is safe; a new pool (after a reconnect) gets a new client.
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
