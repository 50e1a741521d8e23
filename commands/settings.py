"""Settings of the write side, read once from the environment (prefix COMPLAINTS_)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COMPLAINTS_", extra="ignore")

    store: Literal["sqlite", "postgres"] = Field(
        "sqlite", description="event store: an embedded SQLite file, or PostgreSQL"
    )
    sqlite_path: Path = Field(Path("var/complaints.sqlite"), description="SQLite event store file")
    postgres_host: str = "127.0.0.1"
    postgres_port: int = 5432
    postgres_db: str = "complaints"
    postgres_user: str = "complaints"
    postgres_password: str = "complaints"
    postgres_schema: str = ""
    postgres_pool_size: int = 5
    sla_policy: Path | None = Field(None, description="SLA policy TOML; None = the packaged one")
    aggregate_cache_size: int = Field(10_000, description="complaints kept in memory; 0 = none")
    host: str = "127.0.0.1"
    port: int = 8000

    def eventsourcing_env(self) -> dict[str, str]:
        """The environment the eventsourcing Application is configured from."""
        env: dict[str, str] = {}
        if self.aggregate_cache_size:
            env["AGGREGATE_CACHE_MAXSIZE"] = str(self.aggregate_cache_size)
        if self.store == "sqlite":
            self.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
            env |= {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(self.sqlite_path),
                "SQLITE_LOCK_TIMEOUT": "10",
            }
        else:
            env |= {
                "PERSISTENCE_MODULE": "eventsourcing.postgres",
                "POSTGRES_DBNAME": self.postgres_db,
                "POSTGRES_HOST": self.postgres_host,
                "POSTGRES_PORT": str(self.postgres_port),
                "POSTGRES_USER": self.postgres_user,
                "POSTGRES_PASSWORD": self.postgres_password,
                "POSTGRES_POOL_SIZE": str(self.postgres_pool_size),
                "CREATE_TABLE": "y",
            }
            if self.postgres_schema:
                env["POSTGRES_SCHEMA"] = self.postgres_schema
        return env


@lru_cache
def get_settings() -> Settings:
    return Settings()
