"""Create the CDAP topics and their dead-letter topics (idempotent): `python -m cdap_shared.topics`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from cdap_shared.events import TOPICS, dlq_for

PARTITIONS = 6


def all_topics() -> list[str]:
    return [name for topic in TOPICS for name in (topic, dlq_for(topic))]


async def ensure_topics(bootstrap: str, names: list[str] | None = None, partitions: int = PARTITIONS) -> int:
    """Create any missing topic (existing ones are left as they are); returns how many were created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in (names or all_topics()) if n not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process created it meanwhile
                await admin.create_topics(
                    [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in missing]
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
