"""`cdap kafka grant` against the real broker, on a throwaway principal and topics (the stack's own
principals are left alone): the principal it creates logs in with its password, may write the topic it
owns, and is refused the one it only reads."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import TopicAuthorizationFailedError
from confluent_kafka.admin import ScramMechanism, UserScramCredentialDeletion

from cdap_cli.kafka_grant import admin_client, grant, revoke
from cdap_shared.kafka_access import TEST, KafkaLogin, Principal, local_credentials

pytestmark = pytest.mark.stack


async def test_grant_creates_the_principal_with_exactly_its_rights(
    stack: dict[str, str], make_topic: Callable[[str], Awaitable[str]]
) -> None:
    own, read = await make_topic("grant.own"), await make_topic("grant.read")
    principal = Principal(f"cdap-grant-{secrets.token_hex(4)}", (own,), (read,), "grant-test")
    password = secrets.token_urlsafe(24)
    test = local_credentials(TEST)
    if not test:
        pytest.fail("the local stack has no credentials: run `make up` (it secures Kafka)")
    admin = admin_client(stack["kafka"], test["CDAP_KAFKA_USERNAME"], test["CDAP_KAFKA_PASSWORD"])
    grant(admin, {principal.name: password}, (principal,))
    try:
        producer = AIOKafkaProducer(
            bootstrap_servers=stack["kafka"], **KafkaLogin(principal.name, password).options()
        )
        await producer.start()
        try:
            await producer.send_and_wait(own, b"allowed")
            with pytest.raises(TopicAuthorizationFailedError):
                await producer.send_and_wait(read, b"refused")
        finally:
            await producer.stop()
    finally:
        revoke(admin, (principal,))
        deletion = UserScramCredentialDeletion(principal.name, ScramMechanism.SCRAM_SHA_512)
        for future in admin.alter_user_scram_credentials([deletion], request_timeout=30).values():
            future.result()
