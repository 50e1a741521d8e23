"""The composition root's object graph: settings in, the processes' parts out.

One `Wiring` per process, made from the one `Settings`; the packages' command lines get
it as the typer context's `obj` and ask it for what they need (each declares a Protocol
of what it uses), so none of them reads settings or knows how the others are built.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from uuid import UUID
from typing import Any

from fastapi import FastAPI

from aggregates.categories import load_categories
from aggregates.rules import Rules, load_rules
from aggregates.sla import SlaPolicy, load_sla_policy
from commands.access_log import AccessLog
from commands.desk import ComplaintDesk
from complaints.docs_pages import same_origin_docs
from complaints.edge import limit_bodies
from complaints.error_language import in_the_client_language
from complaints.identity import (
    DEV_ISSUER, LocalIssuer, ProviderKeys, RateLimits, TokenVerifier, authenticator, config_router, dev_router,
)
from complaints.operations import Check, operations_router, serve_operations
from complaints.settings import Settings
from commands.personal_data import Keyring
from complaints.store import EventStore, open_access_log, open_desk, open_keyring, open_store

log = logging.getLogger(__name__)


class Wiring:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._closers: list[Callable[[], None]] = []
        self._desk: ComplaintDesk | None = None

    # ------------------------------------------------------------------ the write side
    def desk(self) -> ComplaintDesk:
        desk = open_desk(self.settings)
        self._closers.append(desk.close)
        self._desk = self._desk or desk
        return desk

    @cached_property
    def store(self) -> EventStore:
        """The event store for its readers (relay, log source); a desk already open in this
        process lends its own connections rather than opening others."""
        if self._desk is not None:
            return EventStore.of(self._desk)
        store = open_store(self.settings)
        self._closers.append(store.close)
        return store

    @cached_property
    def sla_policy(self) -> SlaPolicy:
        policy = load_sla_policy(self.settings.sla_policy)
        _warn_of_unpublished_years(policy)
        return policy

    @cached_property
    def categories(self) -> tuple[str, ...]:
        """The complaint categories the read API's `category` filter takes."""
        return load_categories(self.settings.categories)

    @cached_property
    def rules(self) -> Rules:
        """The automation's rules (raises aggregates.rules.RulesError naming the bad key)."""
        return load_rules(self.settings.rules)

    # ------------------------------------------------------------------ identity
    @cached_property
    def dev_issuer(self) -> LocalIssuer | None:
        """The development issuer, when no identity provider is configured (never in production)."""
        settings = self.settings
        if settings.auth_issuer:
            return None
        if settings.env == "production":
            raise ValueError("COMPLAINTS_ENV=production needs an identity provider: set COMPLAINTS_AUTH_ISSUER"
                             " (the development issuer signs tokens for anyone who asks)")
        return LocalIssuer(settings.dev_issuer_key, settings.auth_audience)

    @cached_property
    def verifier(self) -> TokenVerifier:
        settings = self.settings
        keys: LocalIssuer | ProviderKeys
        if self.dev_issuer is not None:
            keys, issuer = self.dev_issuer, DEV_ISSUER
        else:
            assert settings.auth_issuer
            keys, issuer = ProviderKeys(settings.auth_issuer, settings.auth_jwks_url), settings.auth_issuer
        return TokenVerifier(keys, issuer, settings.auth_audience, roles_claim=settings.auth_roles_claim,
                             team_claim=settings.auth_team_claim)

    @cached_property
    def authenticate(self) -> Callable[..., Any]:
        """The APIs' dependency: the request's principal (401 without a valid token, 429 past its limits)."""
        settings = self.settings
        limits = RateLimits(settings.rate_limit_commands, settings.rate_limit_reads, settings.rate_limit_costly)
        return authenticator(self.verifier, limits)

    def sign_in_routes(self, app: FastAPI) -> None:
        """How the page signs in: the development sign-in, or the configured provider's."""
        claims = {"roles_claim": self.settings.auth_roles_claim, "team_claim": self.settings.auth_team_claim}
        if self.dev_issuer is not None:
            app.include_router(dev_router(self.dev_issuer))
            app.include_router(config_router("development", DEV_ISSUER, None, **claims))
        else:
            assert self.settings.auth_issuer
            app.include_router(config_router("oidc", self.settings.auth_issuer, self.settings.auth_client_id, **claims))

    # ------------------------------------------------------------------ the backbone
    def relay(self, batch_size: int | None = None) -> Any:
        """A relay from the event store to the configured topic (raises ValueError without Kafka)."""
        from consumers.relay import Relay, make_producer

        bootstrap = self.settings.require_kafka()
        relay = Relay(
            recorder=self.store.recorder,
            mapper=self.store.mapper,
            tracking=self.store.tracking,
            producer_factory=lambda: make_producer(bootstrap),
            topic=self.settings.topic,
            batch_size=batch_size or self.settings.relay_batch_size,
            pause_before_tracking=self.settings.fault_relay_pause,
        )
        self.start_audit_checkpoints()  # beside the relay: the log's signed checkpoints (docs/privacy.md)
        return relay

    @cached_property
    def audit_checkpointer(self) -> Any:
        """The follower signing checkpoints of the log's global chain (consumers.checkpoints),
        publishing them to <topic>.checkpoints too when Kafka is configured."""
        from consumers.checkpoints import Checkpointer, KafkaCheckpoints

        settings = self.settings
        publisher = (KafkaCheckpoints(settings.kafka_bootstrap, f"{settings.topic}.checkpoints")
                     if settings.kafka_bootstrap else None)
        return Checkpointer(self.store.recorder, settings.audit_checkpoints_file(), self.audit_signing_key(),
                            every=settings.audit_checkpoint_every, idle_seconds=settings.audit_checkpoint_idle_seconds,
                            publisher=publisher)

    def audit_signing_key(self) -> Any:
        """The checkpoints' Ed25519 signing key (its file made when missing, owner only)."""
        from complaints.keys import load_or_create_key
        from consumers.checkpoints import signing_key_from

        return signing_key_from(load_or_create_key(self.settings.audit_signing_key))

    def start_audit_checkpoints(self) -> None:
        """The checkpointer in a thread of this process (the relay's; `complaints run`'s), closed with it."""
        checkpointer = self.audit_checkpointer
        if not checkpointer.running:
            checkpointer.start_background()
            self._closers.append(checkpointer.close)

    def read_node(self, db: Path | None = None, source: str | None = None,
                  projectors: Sequence[Any] | None = None, **options: Any) -> Any:
        """A read node as configured: on Kafka when COMPLAINTS_KAFKA_BOOTSTRAP is set (or
        `source="kafka"`), else following the event store in this process."""
        from consumers.batching import PoisonBudget
        from consumers.read_node import ReadNode, load_projectors

        settings = self.settings if source is None else self.settings.model_copy(update={"source": source})
        chosen = self._source(settings)
        if projectors is None:
            projectors = load_projectors(settings.projectors)
        options.setdefault("batch_size", settings.consumer_batch_size)
        options.setdefault("commit_pause", settings.fault_commit_pause)
        options.setdefault("linger", settings.consumer_linger_seconds)
        options.setdefault("window", settings.instants())
        options.setdefault("poison_budget", PoisonBudget(settings.poison_search_seconds,
                                                         settings.poison_search_memory_mb * 2**20))
        return ReadNode(db or settings.read_db, chosen, projectors, **options)

    def _source(self, settings: Settings, client_id: str = "complaints-read-node") -> Any:
        from consumers.sources import KafkaSource, LogSource

        if settings.use_kafka():
            return KafkaSource(settings.kafka_bootstrap, settings.topic, client_id=client_id)  # type: ignore[arg-type]
        return LogSource(self.store.recorder, self.store.mapper, idle_sleep=settings.poll_interval)

    def automation(self, state: Path | None = None, source: str | None = None, desk: ComplaintDesk | None = None,
                   **options: Any) -> Any:
        """The automation as configured: its rules, its state file, the source a read node
        would use, acting through `desk` (this process's, else a new one)."""
        from consumers.automation import Automation

        settings = self.settings if source is None else self.settings.model_copy(update={"source": source})
        rules = self.rules
        desk = desk or self._desk or self.desk()
        options.setdefault("fault_pause", settings.fault_automation_pause)
        return Automation(self._source(settings, "complaints-automation"), desk, rules, self.sla_policy,
                          state or settings.automation_state, **options)

    def knowledge_drafter(self, state: Path | None = None, source: str | None = None,
                          desk: ComplaintDesk | None = None, **options: Any) -> Any:
        """The knowledge drafter (consumers.knowledge): the source a read node would use, its
        state file (default: beside the automation's), drafting through `desk` (this
        process's, else a new one)."""
        from commands.knowledge import KnowledgeDesk
        from consumers.knowledge import KnowledgeDrafter

        settings = self.settings if source is None else self.settings.model_copy(update={"source": source})
        desk = desk or self._desk or self.desk()
        options.setdefault("fault_pause", settings.fault_automation_pause)
        return KnowledgeDrafter(self._source(settings, "complaints-knowledge"), KnowledgeDesk(desk),
                                state or settings.automation_state.with_name("knowledge-drafter.sqlite"), **options)

    @cached_property
    def knowledge_articles(self) -> Any:
        """The knowledge articles and their suggestions index, following the event store in
        a thread of this process (stopped with it)."""
        from projections.knowledge_articles import KnowledgeArticles

        articles = KnowledgeArticles(self.store.recorder, self.store.mapper)
        articles.start_background()
        self._closers.append(articles.stop)
        return articles

    def suggestions_router(self, node: Callable[[], Any]) -> Any:
        from read_api.suggestions import suggestions_router

        return suggestions_router(node, self.knowledge_articles, self.authenticate)

    # ------------------------------------------------------------------ notifications
    @cached_property
    def customer_links(self) -> Any:
        """Signs and reads the customers' status and survey links."""
        from aggregates.customer_links import CustomerLinks
        from complaints.keys import load_or_create_key

        return CustomerLinks(load_or_create_key(self.settings.links_key))

    @cached_property
    def customer_pages(self) -> tuple[Any, Any]:
        """The customers' pages and the one per-address limit their page and survey share."""
        from read_api.customer_page import CustomerPages, address_limit

        return CustomerPages(self.settings.timezone), address_limit(self.settings.rate_limit_customer_page)

    @property
    def notify_allow_hosts(self) -> list[str]:
        return self.settings.notify_allow_hosts

    def notifier(self, state: Path | None = None, source: str | None = None, desk: ComplaintDesk | None = None,
                 extra_allowed: Sequence[str] = (), **options: Any) -> Any:
        """The notifier as configured: the source a read node would use, its state file, the
        customers' channels (SMTP, the SMS gateway) and the delivery schedule; `extra_allowed`:
        endpoints the SSRF guard lets through besides COMPLAINTS_NOTIFY_ALLOW_HOSTS."""
        from consumers.delivery import Outbound, Smtp
        from consumers.notification_routing import CustomerChannels, Router
        from consumers.notifier import Delivery, Notifier
        from consumers.notify_render import use_templates

        settings = self.settings if source is None else self.settings.model_copy(update={"source": source})
        use_templates(settings.notify_templates)
        desk = desk or self._desk or self.desk()
        smtp = Smtp(settings.smtp_host, settings.smtp_port, settings.smtp_sender, settings.smtp_user,
                    settings.smtp_password, settings.smtp_starttls) if settings.smtp_host else None
        router = Router(self.sla_policy, self.customer_links,
                        CustomerChannels(email=smtp is not None, sms=bool(settings.sms_gateway),
                                         language=settings.customer_language),
                        public_url=settings.public_url, link_days=settings.link_days, timezone=settings.timezone,
                        opener=desk.keyring.open if desk.keyring is not None else None)
        delivery = Delivery(settings.notify_retry_schedule, settings.notify_disable_after, settings.notify_timeout,
                            settings.notify_concurrency, settings.notify_endpoint_concurrency)
        return Notifier(self._source(settings, "complaints-notifier"), self.store.recorder, desk, router,
                        state or settings.notifier_state,
                        Outbound(smtp, settings.sms_gateway, settings.notify_allow_hosts, extra_allowed),
                        delivery, **options)

    def notifier_router(self, notifier: Any) -> Any:
        from consumers.notifier_api import notifier_router

        return notifier_router(notifier.outbox.path, self.authenticate, notifier.dispatcher.wake)

    def notifier_app(self, notifier: Any) -> FastAPI:
        """The notifier's /subscriptions and /deliveries, with /health, /ready and /metrics."""
        from commands.api import operation_id
        from fastapi_offline import FastAPIOffline

        # Swagger UI and ReDoc from the installed fastapi-offline package, not a CDN.
        app = FastAPIOffline(title="Complaints: notifier", version="1.0", generate_unique_id_function=operation_id,
                             summary="Subscriptions as the notifier follows them, deliveries and their attempts,"
                                     " re-sends.")
        app.include_router(self.notifier_router(notifier))
        app.include_router(operations_router(
            lambda: None if notifier.caught_up.is_set() else "the notifier to catch up"))
        return in_the_client_language(limit_bodies(same_origin_docs(app), self.settings.max_body_bytes))

    def serve_notifier(self, notifier: Any, host: str, port: int) -> None:
        log.info("notifier serving http://%s:%d/deliveries", host, port)
        self.serve(self.notifier_app(notifier), host, port)

    # ------------------------------------------------------------------ HTTP
    def command_app(self, desk: ComplaintDesk | None = None, node: Any = None) -> FastAPI:
        """The command API with /health, /ready (the store answers; and `node` caught up) and /metrics."""
        from commands.api import create_app

        desk = desk or self.desk()
        from commands.customer_survey import customer_survey_router

        app = create_app(desk, self.authenticate, self.settings.notify_allow_hosts, self.attachments(desk))
        pages, limit = self.customer_pages
        app.include_router(customer_survey_router(desk, self.customer_links, pages=pages, limit=limit))
        app.include_router(operations_router(_store_answers(desk.recorder), *_caught_up(node)))
        self.sign_in_routes(app)
        # An upload's body is the file: its route holds it to COMPLAINTS_ATTACHMENT_MAX_BYTES.
        return in_the_client_language(limit_bodies(same_origin_docs(app), self.settings.max_body_bytes,
                                                   own_limits=("/attachments",)))

    def attachments(self, desk: ComplaintDesk) -> Any:
        """The attachments' API over the configured blob store (a directory, or an S3 bucket),
        encrypted under `desk`'s keyring; None where personal data is not sealed (no keys)."""
        from commands.attachments import Attachments
        from commands.blobs import DirectoryBlobs, bucket_blobs
        from commands.sealed_blobs import SealedBlobs

        settings = self.settings
        if desk.keyring is None:
            return None
        store = (bucket_blobs(settings.s3_bucket, settings.s3_prefix, endpoint=settings.s3_endpoint,
                              region=settings.s3_region, access_key_id=settings.s3_access_key_id,
                              secret_access_key=settings.s3_secret_access_key)
                 if settings.s3_bucket else DirectoryBlobs(settings.attachments_dir))
        blobs = SealedBlobs(store, desk.keyring, settings.attachment_max_bytes, settings.attachment_media_types)
        return Attachments(blobs, desk)

    def read_app(self, node: Any) -> FastAPI:
        """The read API and dashboards over a read node, with /health, /ready and /metrics."""
        from read_api.app import create_read_app

        app = create_read_app(node, self.authenticate, cache_seconds=self.settings.read_cache_seconds,
                              timezone=self.settings.timezone, policy=self.sla_policy,
                              access_log=self.access_log, personal_data=self.keyring,
                              chain_links=self.chain_links, instants=self.settings.instants(),
                              categories=self.categories, as_of_granularity=self.settings.as_of_granularity_seconds)
        app.include_router(self.customer_page_router(lambda: node))
        app.include_router(self.suggestions_router(lambda: node))
        app.include_router(operations_router(*_caught_up(node)))
        self.sign_in_routes(app)
        return in_the_client_language(limit_bodies(same_origin_docs(app), self.settings.max_body_bytes))

    def read_router(self, node: Callable[[], Any]) -> Any:
        """The read API's routes and the customers' status page, over `node()`."""
        from read_api.app import read_router

        router = read_router(node, self.authenticate, cache_seconds=self.settings.read_cache_seconds,
                             timezone=self.settings.timezone, policy=self.sla_policy, access_log=self.access_log,
                             personal_data=self.keyring, chain_links=self.chain_links,
                             instants=self.settings.instants(), categories=self.categories,
                             as_of_granularity=self.settings.as_of_granularity_seconds)
        router.include_router(self.customer_page_router(node))
        router.include_router(self.suggestions_router(node))
        return router

    def customer_page_router(self, node: Callable[[], Any]) -> Any:
        from read_api.customer_page import customer_page_router

        pages, limit = self.customer_pages
        return customer_page_router(node, self.customer_links, pages=pages, limit=limit)

    @cached_property
    def chain_links(self) -> Callable[[UUID], dict[int, dict[str, Any]]] | None:
        """A complaint's chain links as the event store holds them, checked (for the audit
        view); None where the chain key is not here."""
        from consumers.audit_chain import links_of

        if not self.settings.chain_key.exists():
            return None
        key, recorder = self.settings.chain_key.read_bytes(), self.store.recorder

        def links(complaint_id: UUID) -> dict[int, dict[str, Any]]:
            return {link["version"]: {"link": link["link"], "intact": link["intact"], "problem": link["problem"]}
                    for link in links_of(recorder, key, complaint_id)}

        return links

    @cached_property
    def keyring(self) -> Keyring | None:
        """The customers' data keys (to open sealed personal data): the desk's, when this
        process has one; None when sealing is off."""
        if self._desk is not None:
            return self._desk.keyring
        if not self.settings.seal_personal_data:
            return None
        return open_keyring(self.settings, self.store.recorder)

    @cached_property
    def access_log(self) -> AccessLog:
        """Where views of personal data are recorded: the desk's, when this process has one."""
        if self._desk is not None and self._desk.access_log is not None:
            return self._desk.access_log
        log_ = open_access_log(self.settings)
        self._closers.append(log_.close)
        return log_

    def include_page(self, app: FastAPI) -> None:
        from read_api.page import page_router

        app.include_router(page_router(self.settings.timezone))

    def serve(self, app: FastAPI, host: str, port: int) -> None:
        """Serve until SIGTERM or SIGINT: requests in flight finish, then this returns."""
        import uvicorn

        # uvicorn re-raises the signal it stopped on once it has stopped; a handler that
        # only logs lets the callers' `finally` (closing the read node, the store) run.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda number, _frame: log.info("%s: stopped", signal.Signals(number).name))
        uvicorn.run(app, host=host, port=port, log_level="warning", log_config=None)

    def serve_with_node(self, app: FastAPI, node: Any, host: str, port: int) -> None:
        """`app` and `node` in one process: the node consumes in a thread while the app serves."""
        node.start_background()
        try:
            self.serve(app, host, port)
        finally:
            node.stop()
            node.close()

    def serve_read_node(self, node: Any, host: str, port: int) -> None:
        """A read node that also answers the read API and dashboards (one process owns the file)."""
        app = self.read_app(node)
        log.info("read node serving http://%s:%d/dashboard", host, port)
        self.serve_with_node(app, node, host, port)

    def serve_operations(self, *checks: Check) -> None:
        """/health, /ready, /metrics of a headless process, when COMPLAINTS_METRICS_PORT is set."""
        if self.settings.metrics_port is not None:
            serve_operations(self.settings.host, self.settings.metrics_port, *checks)

    def close(self) -> None:
        while self._closers:
            try:
                self._closers.pop()()
            except Exception as error:  # closing one part must not keep the others open
                log.debug("closing: %s", error)


def _warn_of_unpublished_years(policy: SlaPolicy) -> None:
    """Says so when a calendar's official holidays end before next year: later days count as
    ordinary weeks (no Spring Festival) until a newer package publishes them."""
    from datetime import date

    from aggregates.official_days import official_days

    for name, calendar in policy.calendars.items():
        if calendar.holidays_from is not None:
            last = official_days(calendar.holidays_from).last_year
            if last <= date.today().year:
                log.warning("SLA calendar %s: %s publishes holidays and make-up days up to %d only; later days count"
                            " as ordinary weeks until it is upgraded (pip install -U %s)", name,
                            calendar.holidays_from, last, calendar.holidays_from)


def _store_answers(recorder: Any) -> Check:
    def check() -> str | None:
        recorder.max_notification_id()  # raises while the store is away: not ready, and why
        return None

    return check


def _caught_up(node: Any) -> list[Check]:
    if node is None:
        return []
    return [lambda: None if node.caught_up.is_set() else f"the read node to catch up with {node.source.name}"]
