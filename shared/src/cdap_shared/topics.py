"""The CDAP topics' names, and their creation with their dead-letter topics (idempotent):
`python -m cdap_shared.topics`.

`CDAP_TOPIC_PREFIX` (empty by default) goes in front of every default topic name and consumer group, so
two systems can share a broker without reading each other's events: a test run uses its own prefix while
`make run` keeps the plain names. A name set explicitly (`CDAP_IDENTITY_TOPIC`, ...) is used as given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from cdap_shared.events import TOPICS, dlq_for
from cdap_shared.kafka_access import KafkaLogin

PARTITIONS = 6
# Three copies, two of which must have a record before it is acknowledged (producers use acks=all):
# one broker of three can be lost without losing a record or refusing writes.
REPLICAS = 3
MIN_IN_SYNC = 2


class TopicNaming(BaseSettings):
    """`CDAP_TOPIC_PREFIX`: what goes in front of the default topic names and consumer groups."""

    model_config = SettingsConfigDict(env_prefix="CDAP_", env_file=None, extra="ignore")

    topic_prefix: str = Field(default="", max_length=100, pattern=r"^[A-Za-z0-9._-]*$")


@functools.cache
def prefix() -> str:
    """The process's topic prefix (read once: every name of a process must agree)."""
    return TopicNaming().topic_prefix


def named(name: str) -> str:
    """A default topic or consumer-group name as this process uses it (with the prefix)."""
    return prefix() + name


def all_topics() -> list[str]:
    """Every CDAP topic and its dead-letter topic, with the prefix."""
    return [named(name) for topic in TOPICS for name in (topic, dlq_for(topic))]


async def ensure_topics(
    bootstrap: str,
    names: list[str] | None = None,
    partitions: int = PARTITIONS,
    login: KafkaLogin | None = None,
) -> int:
    """Create any missing topic (existing ones are left as they are), replicated on up to `REPLICAS`
    brokers; returns how many were created. Logs in as `login` (by default from the environment)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(login or KafkaLogin.from_env()).options())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in (names or all_topics()) if n not in existing]
        if missing:
            replicas = min(REPLICAS, len((await admin.describe_cluster())["brokers"]))
            configs = {"min.insync.replicas": str(min(MIN_IN_SYNC, replicas))}
            with contextlib.suppress(TopicAlreadyExistsError):  # another process created it meanwhile
                await admin.create_topics(
                    [NewTopic(n, partitions, replicas, topic_configs=configs) for n in missing]
                )
        return len(missing)
    finally:
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    args = parser.parse_args()
    created = asyncio.run(ensure_topics(args.bootstrap))
    print(f"[stack] topics: {created} created, {len(all_topics()) - created} already there")


if __name__ == "__main__":
    main()
