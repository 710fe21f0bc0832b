"""Creating the CDAP topics and their dead-letter topics (idempotent), for a deployment or the local
stack: `python -m cdap_cli.topics --bootstrap HOST:PORT`, or `cdap kafka topics`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from cdap_shared.kafka_access import KafkaLogin
from cdap_shared.topics import all_topics

PARTITIONS = 6
# Three copies, two of which must have a record before it is acknowledged (producers use acks=all):
# one broker of three can be lost without losing a record or refusing writes.
REPLICAS = 3
MIN_IN_SYNC = 2


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


def report(bootstrap: str) -> str:
    """Create what is missing; one line saying how many were created and how many were there."""
    created = asyncio.run(ensure_topics(bootstrap))
    return f"[stack] topics: {created} created, {len(all_topics()) - created} already there"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    print(report(parser.parse_args().bootstrap))


if __name__ == "__main__":
    main()
