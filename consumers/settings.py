"""Settings of the event backbone (relay, read nodes), read from the environment.

Same prefix as the write side (`COMPLAINTS_`); the event store itself is configured by
`commands.settings.Settings`, which the relay and the in-process follower share.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class BusSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COMPLAINTS_", extra="ignore")

    kafka_bootstrap: str | None = Field(
        None, description="host:port[,host:port] of Kafka; unset = no Kafka, read nodes follow the event store"
    )
    topic: str = Field("complaints.events", description="the event topic; dead letters go to <topic>.dead-letter")
    partitions: int = Field(6, ge=1, description="partitions of a newly created event topic")
    read_db: Path = Field(Path("var/read.duckdb"), description="the read node's DuckDB file")
    source: Literal["auto", "kafka", "log"] = Field(
        "auto", description="what feeds a read node: kafka, the event store's log, or auto (kafka when configured)"
    )
    projectors: str = Field(
        "", description="extra projectors for read nodes, comma-separated module:Class (the event log is always on)"
    )
    relay_batch_size: int = Field(2_000, ge=1, description="events per relay publish (one acknowledgement wait)")
    consumer_batch_size: int = Field(20_000, ge=1, description="messages per read-node batch (one DuckDB transaction)")
    poll_interval: float = Field(0.05, gt=0, description="seconds between polls when idle (relay and log follower)")
    # Fault injection for the fault tests only: widen the windows a crash must hit.
    fault_relay_pause: float = Field(0.0, ge=0, description="test only: seconds between Kafka's ack and recording the position")
    fault_commit_pause: float = Field(0.0, ge=0, description="test only: seconds inside a read-node transaction before commit")

    def use_kafka(self) -> bool:
        if self.source == "kafka" and not self.kafka_bootstrap:
            raise ValueError("COMPLAINTS_SOURCE=kafka needs COMPLAINTS_KAFKA_BOOTSTRAP (host:port of the broker)")
        return self.source == "kafka" or (self.source == "auto" and bool(self.kafka_bootstrap))

    def require_kafka(self) -> str:
        if not self.kafka_bootstrap:
            raise ValueError("set COMPLAINTS_KAFKA_BOOTSTRAP (host:port of the Kafka broker) to run the relay")
        return self.kafka_bootstrap

    @property
    def dead_letter_topic(self) -> str:
        return dead_letter_topic(self.topic)


def dead_letter_topic(topic: str) -> str:
    return f"{topic}.dead-letter"


@lru_cache
def get_bus_settings() -> BusSettings:
    return BusSettings()
