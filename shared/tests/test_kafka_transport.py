"""A write to a connection the broker closed is a Kafka connection error under uvloop too."""

from __future__ import annotations

import asyncio
import socket

import uvloop
from aiokafka import errors
from aiokafka.conn import AIOKafkaConnection
from aiokafka.protocol.metadata import MetadataRequest

from cdap_shared import kafka_transport


async def _write_after_the_peer_closed(installed: bool) -> tuple[BaseException, AIOKafkaConnection]:
    """Open a connection to a listener, close the transport, then send a request on it, as aiokafka's
    fetcher did after a broker restart."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    reader, writer = await asyncio.open_connection(*listener.getsockname())
    connection = AIOKafkaConnection("127.0.0.1", listener.getsockname()[1])
    connection._reader, connection._writer, connection._versions = reader, writer, {}
    connection._read_task = asyncio.get_running_loop().create_future()  # stands for its reading task
    writer.transport.abort()
    await asyncio.sleep(0)
    if installed:
        kafka_transport.install()
    try:
        connection.send(MetadataRequest([]))
    except BaseException as exc:  # what it raises is the point
        return exc, connection
    finally:
        listener.close()
    raise AssertionError("the send did not fail")


def test_uvloop_raises_a_runtime_error_aiokafka_does_not_recover_from() -> None:
    """Without the shim: what killed the fetch routine (the check that the test sees the failure)."""
    original = AIOKafkaConnection.send
    try:
        AIOKafkaConnection.send = kafka_transport._send  # type: ignore[method-assign]
        raised, _ = uvloop.run(_write_after_the_peer_closed(installed=False))
    finally:
        AIOKafkaConnection.send = original  # type: ignore[method-assign]
    assert isinstance(raised, RuntimeError)


def test_with_the_shim_it_is_a_connection_error_and_the_connection_is_closed() -> None:
    raised, connection = uvloop.run(_write_after_the_peer_closed(installed=True))
    assert isinstance(raised, errors.KafkaConnectionError), raised
    assert "broken" in str(raised)
    assert not connection.connected()  # aiokafka's client opens a new one on its next request
