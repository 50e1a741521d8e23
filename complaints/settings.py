"""The one place settings come from: the environment (prefix COMPLAINTS_), read once.

Every other module takes what it needs as arguments; `tests/test_layers.py` checks that
no module outside this package reads `os.environ`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AwareDatetime, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from aggregates.instants import EARLIEST, LATEST, InstantWindow


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COMPLAINTS_", extra="ignore")

    # ------------------------------------------------------------------ event store
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
    aggregate_cache_size: int = Field(10_000, description="complaints kept in memory; 0 = none")

    # ------------------------------------------------------------------ domain
    sla_policy: Path | None = Field(None, description="SLA policy TOML; None = the packaged one")
    timezone: str = Field("Asia/Shanghai", description="time zone of the dashboards' days and weeks")
    rules: Path | None = Field(None, description="automation rules TOML; None = the packaged one (aggregates/rules.toml)")
    categories: Path | None = Field(None, description="complaint categories TOML (the read filter's values);"
                                                     " None = the packaged one (aggregates/categories.toml)")
    fields: Path | None = Field(None, description="custom field definitions TOML (docs/fields.md); None = the packaged"
                                                 " one (aggregates/fields.toml)")
    automation_state: Path = Field(Path("var/automation.sqlite"), description="the automation's own state file")

    # ------------------------------------------------------------------ HTTP
    host: str = Field("127.0.0.1", description="address the API listens on")
    port: int = Field(8000, description="port the API listens on")
    read_cache_seconds: float = Field(5.0, ge=0, description="how long the read API caches a dashboard; 0 = never")
    max_body_bytes: int = Field(
        1024 * 1024, ge=1024, description="largest request body the HTTP APIs read (bytes); past it a 413, before parsing"
    )
    as_of_granularity_seconds: int = Field(
        60, ge=0, le=86_400, description="as_of instants are rounded down to this (seconds; 0 = not rounded) unless an"
        " event occurred in between (rounding never hides an event): one computation per distinct instant, shared by"
        " concurrent requests and kept until an event at or before it arrives",
    )

    # ------------------------------------------------------------------ identity
    env: Literal["development", "production"] = Field(
        "development", description="production refuses the development issuer: set COMPLAINTS_AUTH_ISSUER"
    )
    auth_issuer: str | None = Field(
        None, description="OpenID Connect issuer URL (e.g. a Keycloak realm); unset = the development issuer"
    )
    auth_jwks_url: str | None = Field(None, description="the issuer's JWKS URL; unset = from its discovery document")
    auth_audience: str = Field("complaints-api", description="the audience (aud) tokens must name")
    auth_client_id: str = Field("complaints-web", description="the OIDC client the page signs in with")
    auth_roles_claim: str = Field("realm_access.roles", description="dotted path of the roles claim in a token")
    auth_team_claim: str = Field("team", description="the claim naming the principal's team")
    dev_issuer_key: Path = Field(Path("var/dev-issuer.pem"), description="the development issuer's private key (made when missing)")
    clock_skew_seconds: float = Field(
        120, ge=0, le=86_400, description="how far in the future an importer's occurred_at may be (at most a day)")
    rate_limit_commands: str = Field("100/second", description="commands per principal (limits' notation)")
    rate_limit_reads: str = Field("100/second", description="reads per principal")
    rate_limit_costly: str = Field("60/minute", description="exports and as_of views per principal")

    # ------------------------------------------------------------------ instants (aggregates/instants.py)
    earliest_instant: AwareDatetime = Field(
        EARLIEST, description="no instant a command states, an event holds or a query asks for may be earlier"
        " (422 naming the field; a read node dead-letters such an event)",
    )
    latest_instant: AwareDatetime = Field(
        LATEST, description="instants must be earlier than this: query parameters (as_of, start, end, at), an alert's"
        " due_at, and events a read node applies (commands' occurred_at: at most now + clock_skew_seconds)",
    )

    # ------------------------------------------------------------------ privacy and audit
    master_key: Path = Field(
        Path("var/master.key"), description="the master key wrapping each customer's data key (32 bytes). Made when"
        " missing only in development and only while no data key exists; otherwise a missing or wrong key refuses to"
        " start (docs/privacy.md)")
    retired_master_keys: list[Path] = Field(
        default_factory=list, description="earlier master keys, still opening data keys until `complaints"
        " personal-data rotate` re-wraps them under master_key (JSON list of paths)")
    seal_personal_data: bool = Field(
        True, description="seal customers' personal data per customer (off only to measure what sealing costs)")
    chain_key: Path = Field(
        Path("var/chain.key"), description="the key of every event's chain link (made when missing while the store"
        " holds no chained event; a key that does not verify the stored chain refuses to start)")
    audit_checkpoints: Path | None = Field(
        None, description="the signed checkpoints of the log's global chain, one JSON line each (copy it elsewhere);"
        " unset = audit/checkpoints.jsonl beside the SQLite store (var/audit/checkpoints.jsonl), on PostgreSQL"
        " var/audit/checkpoints[-<schema>].jsonl")
    audit_signing_key: Path = Field(
        Path("var/audit/signing.key"), description="the Ed25519 key signing the audit checkpoints (made when missing;"
        " `complaints audit public-key` prints its public key)")
    audit_checkpoint_every: int = Field(1000, ge=1, description="events between two signed audit checkpoints")
    audit_checkpoint_idle_seconds: float = Field(
        60.0, ge=0, description="a checkpoint of the events not yet covered once the log is idle this long; 0 = never")

    # ------------------------------------------------------------------ attachments (docs/attachments.md)
    attachments_dir: Path = Field(Path("var/attachments"), description="where attachments are kept, encrypted,"
                                  " when no S3 bucket is configured")
    attachment_max_bytes: int = Field(
        25 * 1024 * 1024, ge=1, le=2 * 1024**3, description="largest attachment an upload may send (bytes); past it"
        " a 413, reading stops there")
    attachment_media_types: list[str] = Field(
        default_factory=lambda: ["image/*", "audio/*", "video/*", "application/pdf", "text/plain"],
        description="media types an upload may declare (`image/*`: every image type); others a 415 (JSON list)")
    s3_bucket: str | None = Field(None, description="an S3-compatible bucket for attachments (needs `complaints[s3]`);"
                                  " unset = attachments_dir")
    s3_endpoint: str | None = Field(None, description="the S3-compatible server's URL (MinIO, Ceph, OSS...); unset = AWS")
    s3_region: str | None = None
    s3_prefix: str = Field("attachments/", description="prefix of the attachments' object keys in the bucket")
    s3_access_key_id: str | None = Field(None, description="unset = boto3's own chain (environment, profile, role)")
    s3_secret_access_key: str | None = None

    # ------------------------------------------------------------------ notifications
    notifier_state: Path = Field(Path("var/notifier.sqlite"), description="the notifier's own state: outbox, attempts, positions")
    secrets_key: Path = Field(Path("var/secrets.key"), description="master key sealing subscriptions' secrets in the event store (made when missing)")
    links_key: Path = Field(Path("var/links.key"), description="key signing the customers' status and survey links (made when missing)")
    public_url: str = Field("http://127.0.0.1:8000", description="the address customers' links point to")
    link_days: int = Field(30, ge=1, le=365, description="days a customer's status or survey link stays valid")
    customer_language: Literal["zh-CN", "en"] = Field("zh-CN", description="the language customers are written to in")
    rate_limit_customer_page: str = Field("30/minute", description="customer status page and survey, per client address")
    smtp_host: str | None = Field(None, description="SMTP server for e-mail notifications; unset = no e-mail")
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_sender: str = Field("complaints@localhost", description="the From address of notification e-mails")
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = Field(False, description="upgrade the SMTP connection with STARTTLS")
    notify_templates: Path | None = Field(
        None, description="a directory of the company's own message templates, taking the place of the packaged ones"
        " of the same name (consumers/templates)",
    )
    sms_gateway: str | None = Field(None, description="HTTP gateway URL SMS notifications are POSTed to; unset = no SMS")
    notify_allow_hosts: list[str] = Field(
        default_factory=list, description="hosts, addresses or CIDR ranges endpoints may use although private"
        " (loopback, private, link-local); JSON list, e.g. [\"127.0.0.1\"]",
    )
    notify_retry_schedule: list[float] = Field(
        default_factory=lambda: [5, 300, 1800, 7200, 18000, 36000],
        description="seconds before each retry of a failed delivery (jittered); then it has failed",
    )
    notify_disable_after: float = Field(86400, gt=0, description="seconds an endpoint may keep failing before it is disabled")
    notify_timeout: float = Field(10, gt=0, description="seconds a delivery attempt may take")
    notify_endpoint_concurrency: int = Field(16, ge=1, description="deliveries in flight per endpoint")
    notify_concurrency: int = Field(512, ge=1, description="deliveries in flight in all")

    # ------------------------------------------------------------------ backbone
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
    consumer_linger_seconds: float = Field(
        0.2, ge=0, le=5, description="after a batch smaller than consumer_batch_size, how long a read node lets the"
        " next one gather before applying it (each batch has a fixed cost; freshness grows by up to this much)",
    )
    poison_search_seconds: float = Field(
        30.0, gt=0, description="how long a read node may search a failing batch for the event a read model"
        " fails on; past it the events still suspected go to the dead letters together",
    )
    poison_search_memory_mb: int = Field(
        1024, ge=16, description="how much a read node's memory may grow while it searches for that event",
    )
    poll_interval: float = Field(0.05, gt=0, description="seconds between polls when idle (relay and log follower)")

    # ------------------------------------------------------------------ operations
    metrics_port: int | None = Field(
        None, description="port of /metrics, /health and /ready for a headless process (relay, read node without --serve)"
    )
    log_format: Literal["text", "json"] = Field("text", description="log lines as text, or as JSON objects")
    log_level: str = Field("INFO", description="the root log level")

    # Fault injection for the fault tests only: widen the windows a crash must hit.
    fault_relay_pause: float = Field(0.0, ge=0, description="test only: seconds between Kafka's ack and recording the position")
    fault_commit_pause: float = Field(0.0, ge=0, description="test only: seconds inside a read-node transaction before commit")
    fault_automation_pause: float = Field(0.0, ge=0, description="test only: seconds between the automation's actions and saving its state")

    @model_validator(mode="after")
    def _window(self) -> Settings:
        self.instants()  # a window outside the domain's own, or empty, fails at start-up
        return self

    def instants(self) -> InstantWindow:
        """The window every instant must lie in (aggregates.instants)."""
        return InstantWindow(self.earliest_instant, self.latest_instant)

    def eventsourcing_env(self) -> dict[str, str]:
        """The environment an eventsourcing application or factory is configured from."""
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

    @property
    def dead_letter_topic(self) -> str:
        from consumers.sources import dead_letter_topic

        return dead_letter_topic(self.topic)

    def audit_checkpoints_file(self) -> Path:
        """Where the audit checkpoints go: the setting, else beside the store (one file per store)."""
        if self.audit_checkpoints is not None:
            return self.audit_checkpoints
        if self.store == "sqlite":
            return self.sqlite_path.parent / "audit" / "checkpoints.jsonl"
        suffix = f"-{self.postgres_schema}" if self.postgres_schema else ""
        return Path("var/audit") / f"checkpoints{suffix}.jsonl"

    def use_kafka(self) -> bool:
        if self.source == "kafka" and not self.kafka_bootstrap:
            raise ValueError("COMPLAINTS_SOURCE=kafka needs COMPLAINTS_KAFKA_BOOTSTRAP (host:port of the broker)")
        return self.source == "kafka" or (self.source == "auto" and bool(self.kafka_bootstrap))

    def require_kafka(self) -> str:
        if not self.kafka_bootstrap:
            raise ValueError("set COMPLAINTS_KAFKA_BOOTSTRAP (host:port of the Kafka broker) to run the relay")
        return self.kafka_bootstrap


@lru_cache
def get_settings() -> Settings:
    return Settings()
