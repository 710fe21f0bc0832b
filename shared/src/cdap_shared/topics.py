"""The CDAP topics' names (created by the CLI: `python -m cdap_cli.topics`, `cdap kafka topics`).

`CDAP_TOPIC_PREFIX` (empty by default) goes in front of every default topic name and consumer group, so
two systems can share a broker without reading each other's events: a test run uses its own prefix while
`make run` keeps the plain names. A name set explicitly (`CDAP_IDENTITY_TOPIC`, ...) is used as given.
"""

from __future__ import annotations

import functools

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from cdap_shared.events import TOPICS, dlq_for


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
