"""The consuming side of bench/outbox, in its own process (as a real consuming service would be).

--mode cdap : EventConsumer (inbox + one transaction per batch) writing one effect row per event, through
              its batch handler (one statement per batch, as the audit's ingestion does)
--mode plain: a bare aiokafka consumer that only parses the JSON and notes the latency
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import datetime

from aiokafka import AIOKafkaConsumer
from faststream.kafka import KafkaBroker
from sqlalchemy import Column, DateTime, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from cdap_shared.consumer import EventConsumer, Fresh
from cdap_shared.db import create_engine, create_tables, session_factory
from cdap_shared.kafka_access import KafkaLogin


class BenchEffect(SQLModel, table=True):
    __tablename__ = "bench_effect"

    event_id: str = Field(primary_key=True)
    created: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    applied_at: datetime | None = Field(
        default=None,
        sa_column=Column(DateTime(timezone=True), server_default=text("clock_timestamp()"), nullable=False),
    )


_EFFECTS = text(
    "INSERT INTO bench_effect (event_id, created) "
    "SELECT * FROM unnest(CAST(:ids AS varchar[]), CAST(:created AS timestamptz[]))"
)


async def apply_effects(session: AsyncSession, fresh: Fresh) -> None:
    """One effect row per new event of the batch, in one statement."""
    params = {"ids": [item.event.id for item in fresh], "created": [item.event.time for item in fresh]}
    await session.execute(_EFFECTS, params)


async def run_cdap(kafka: str, topic: str, group: str, database_url: str) -> None:
    engine = create_engine(database_url, 5)
    await create_tables(engine)
    broker = KafkaBroker(kafka, security=KafkaLogin.from_env().security(), logger=None)
    EventConsumer(broker, session_factory(engine), group_id=group, batch_handler=apply_effects).subscribe(
        topic, max_records=2000
    )
    await broker.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


async def run_plain(kafka: str, topic: str, group: str, expect: int) -> None:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka,
        **KafkaLogin.from_env().options(),
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    print("ready", flush=True)
    latencies: list[float] = []
    first = last = 0.0
    while len(latencies) < expect:
        batch = await consumer.getmany(timeout_ms=100, max_records=2000)
        now = time.time()
        for records in batch.values():
            for record in records:
                sent = json.loads(record.value)["data"]["sent"]
                latencies.append(now - sent)
        if batch:
            await consumer.commit()
            first = first or now
            last = now
    await consumer.stop()
    json.dump({"latencies": latencies, "last": last}, sys.stdout)
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["cdap", "plain"], required=True)
    parser.add_argument("--kafka", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--database-url")
    parser.add_argument("--expect", type=int, default=0)
    args = parser.parse_args()
    if args.mode == "cdap":
        asyncio.run(run_cdap(args.kafka, args.topic, args.group, args.database_url))
    else:
        asyncio.run(run_plain(args.kafka, args.topic, args.group, args.expect))


if __name__ == "__main__":
    main()
