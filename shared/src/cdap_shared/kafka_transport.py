"""aiokafka under uvloop: a connection the broker closed reads as a connection error.

aiokafka turns an `OSError` from writing to a closed connection into `KafkaConnectionError`, which its
fetcher, group coordinator and producer recover from by reconnecting. uvloop (what uvicorn runs the
services on) raises `RuntimeError` there instead (aio-libs/aiokafka#1038). After a broker restart the
consumer's fetch routine died on it, for good: the audit log stopped taking entries until the service
was restarted (tests/system/test_faults.py, Kafka killed during a burst). `install()`, run by every
service process (`ServiceRuntime`), gives aiokafka the error it recovers from.
"""

from __future__ import annotations

from typing import Any

from aiokafka import errors
from aiokafka.conn import AIOKafkaConnection, CloseReason

_send = AIOKafkaConnection.send


def _send_or_connection_error(self: AIOKafkaConnection, request: Any, expect_response: bool = True) -> Any:
    try:
        return _send(self, request, expect_response)
    except RuntimeError as exc:  # uvloop's "unable to perform operation on <TCPTransport closed=True>"
        self.close(reason=CloseReason.CONNECTION_BROKEN)
        raise errors.KafkaConnectionError(f"Connection at {self.host}:{self.port} broken: {exc}") from exc


def install() -> None:
    """Make `AIOKafkaConnection.send` raise `KafkaConnectionError` on a closed uvloop transport."""
    AIOKafkaConnection.send = _send_or_connection_error  # type: ignore[method-assign]
