"""The Redis transport: one client per connection pool, and messages still go through the real Redis."""

from __future__ import annotations

from pathlib import Path

from node.config import Settings
from node.queue.celery_app import GPU_QUEUE, make_celery, queue_depth, send_many
from node.queue.redis_transport import ALIAS, Channel, transport_url
from tests.support.node_harness import REDIS_URL, base_config


def test_plain_redis_urls_use_the_shared_client_transport_and_others_stay_as_given() -> None:
    assert transport_url("redis://:secret@10.0.0.5:6379/0") == f"{ALIAS}://:secret@10.0.0.5:6379/0"
    assert transport_url("rediss://10.0.0.5:6380/0") == "rediss://10.0.0.5:6380/0"
    assert transport_url("sentinel://10.0.0.5:26379") == "sentinel://10.0.0.5:26379"


def test_a_channel_reuses_its_client_until_its_pool_is_renewed(redis_prefix: str, tmp_path: Path) -> None:
    settings = Settings(**base_config(tmp_path / "storage", REDIS_URL, redis_prefix))
    with make_celery(settings).connection_for_write() as connection:
        channel = connection.default_channel
        assert isinstance(channel, Channel)
        first = channel._create_client()
        assert channel._create_client() is first
        with channel.conn_or_acquire() as client:
            assert client is first and client.ping()

        channel._disconnect_pools()  # as after a lost connection: a new pool, so a new client on it
        renewed = channel._create_client()
        assert renewed is not first and renewed.connection_pool is channel.pool
        assert renewed.ping()


def test_a_batch_of_messages_reaches_the_queue(redis_prefix: str, tmp_path: Path) -> None:
    settings = Settings(**base_config(tmp_path / "storage", REDIS_URL, redis_prefix))

    task_ids = send_many(settings, "pacsnode.test.not_a_task", [(1,), (2,), (3,)])

    assert len(set(task_ids)) == 3
    assert queue_depth(settings, GPU_QUEUE) == 3
