"""The complaint desk: the eventsourcing application that loads, checks, calls and saves.

Every command comes with the `Principal` that acts (a verified token's, or the process's
own for importers and the CLI): the desk asks the permission matrix and the row-level
rule (`aggregates.access`) before anything else, and takes the actor and, unless an
importer states it, the time from there and from its own clock.

Idempotency needs no extra table: every event records its command id and the command's
fingerprint on the aggregate, so a repeated command is recognised when the complaint is
loaded, and a registration collides on the complaint id derived from its command id.
Optimistic concurrency comes from the event store's (originator id, version) key: of two
racing saves one fails.
"""

from __future__ import annotations

import dataclasses
import logging
from functools import partial
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError
from pydantic import ValidationError

from aggregates.access import (
    BACKDATE, MANAGE_SUBSCRIPTIONS, MASK, PERSONAL_DATA, RAISE_ALERT, READ_COMPLAINT, AccessDenied, Principal, masked,
)
from aggregates.alert import Alert
from aggregates.complaint import Complaint, DomainError, Meta, actions_in, complaint_id_for, hidden_field_values
from aggregates.fields import FieldDefinitions, FieldValuesInvalid, load_field_definitions
from aggregates.instants import InstantWindow
from aggregates.personal_text import mask_personal
from aggregates.sla import SlaPolicy, load_sla_policy
from aggregates.subscription import Subscription, subscription_id_for
from commands.access_log import AccessLog
from commands.alerts import AlertCommand, AlertResult, RaiseAlert
from commands.event_chain import EventChain, stored_link
from commands.event_mapper import ComplaintMapper, PersonalFields
from commands.personal_data import Keyring
from commands.correlation import current_correlation_id
from commands.metrics import record_command
from commands.sealing import Sealer, new_webhook_secret
from commands.subscriptions import CreateSubscription, RotateSecret, SubscriptionCommand, SubscriptionResult
from commands.models import (
    Command, CommandResult, ComplaintCommand, EraseCustomer, ErasePersonalData, ErasureResult, InvalidCommand,
    MarkDuplicate, RegisterComplaint, fingerprint,
)

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class ComplaintNotFound(Exception):
    def __init__(self, complaint_id: UUID) -> None:
        super().__init__(f"no complaint with id {complaint_id}")
        self.complaint_id = complaint_id


class AlertNotFound(Exception):
    def __init__(self, alert_id: UUID) -> None:
        super().__init__(f"no alert with id {alert_id}")
        self.alert_id = alert_id


class AlertAlreadyRaised(DomainError):
    """An alert with this key exists, raised by another command."""

    def __init__(self, alert: Alert) -> None:
        super().__init__(f"an alert with key {alert.key!r} was raised already ({alert.id}, {alert.status})")
        self.alert_id = alert.id


class SubscriptionNotFound(Exception):
    def __init__(self, subscription_id: UUID) -> None:
        super().__init__(f"no subscription {subscription_id}")
        self.subscription_id = subscription_id


class VersionConflict(Exception):
    """The complaint is not at the version the command expected (or a racing write won)."""

    def __init__(self, complaint: Complaint | Alert | Subscription, expected: int | None) -> None:
        wanted = f"version {expected}" if expected is not None else "the version it was loaded at"
        super().__init__(
            f"{type(complaint).__name__.lower()} {complaint.id} is at version {complaint.version}, not {wanted}:"
            " reload it and decide again"
        )
        self.current_version = complaint.version
        self.status = complaint.status


class ComplaintDesk(Application):
    name = "Complaints"

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        clock: Clock = utc_now,
        sla_policy: SlaPolicy | None = None,
        max_clock_skew: timedelta = timedelta(minutes=2),
        access_log: AccessLog | None = None,
        sealer: Sealer | None = None,
        instants: InstantWindow | None = None,
        field_definitions: FieldDefinitions | None = None,
    ) -> None:
        super().__init__(env)
        self.sealer = sealer
        self.clock = clock
        self.sla_policy = sla_policy or load_sla_policy()
        self.field_definitions = field_definitions or load_field_definitions()
        self.max_clock_skew = max_clock_skew
        # Every instant a command states lies in this window (aggregates.instants).
        self.instants = instants or InstantWindow()
        self.access_log = access_log
        self.keyring: Keyring | None = None
        self._locks = [threading.Lock() for _ in range(64)]

    def close(self) -> None:
        if self.access_log is not None:
            self.access_log.close()
        super().close()

    # ------------------------------------------------------------------ storage
    def construct_mapper(self) -> ComplaintMapper:  # type: ignore[override]
        base = super().construct_mapper()
        return ComplaintMapper(base.transcoder, personal=None, chain=None, compressor=base.compressor,
                               cipher=base.cipher)

    def protect(self, keyring: Keyring | None, chain_key: bytes | None) -> None:
        """Seal personal data under `keyring` and chain every event with `chain_key` from
        now on (the composition root calls this before the desk takes a command)."""
        self.keyring = keyring
        self.mapper.personal = PersonalFields(keyring) if keyring is not None else None
        self.mapper.chain = EventChain(chain_key, previous=partial(stored_link, self.recorder)) if chain_key else None
        if keyring is not None:
            _write_keys_with_events(self.recorder, keyring)

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        try:
            return super().save(*objs, **kwargs)
        except BaseException:
            # The chain links and keys' rows made for events that were not stored are not theirs.
            ids = [getattr(o, "id", None) for o in objs]
            if self.mapper.chain is not None:
                self.mapper.chain.forget(ids)
            if self.keyring is not None:
                self.keyring.forget(ids)
            raise

    # ------------------------------------------------------------------ commands
    def register(self, command: RegisterComplaint, principal: Principal) -> CommandResult:
        return _measured(command.action, lambda: self._register(command, principal))

    def execute(self, complaint_id: UUID, command: ComplaintCommand, principal: Principal) -> CommandResult:
        return _measured(command.action, lambda: self._execute_locked(complaint_id, command, principal))

    def _register(self, command: RegisterComplaint, principal: Principal) -> CommandResult:
        principal.require(command.action)
        meta = self._meta(command, principal)
        complaint_id = complaint_id_for(meta.command_id)
        complaint = Complaint(**command.event_fields(), **meta.fields())
        if command.fields:
            complaint.update_fields(command.fields, self.field_definitions, meta)
        self.field_definitions.require(complaint.fields, complaint.category, complaint.status)
        try:
            self.save(complaint)
        except IntegrityError:
            # Registered before under this command id: the same command again is answered
            # as the first time; anything else (another body or principal) learns nothing.
            return self._replay(self.get_complaint(complaint_id), meta, command.action)
        log.info("registered complaint %s via %s", complaint_id, command.channel)
        return self._result(complaint, meta.command_id)

    def _execute_locked(self, complaint_id: UUID, command: ComplaintCommand, principal: Principal) -> CommandResult:
        principal.require(principal.permission_for(
            command.action, getattr(command, "team", None), getattr(command, "agent", None)))
        meta = self._meta(command, principal)
        # Commands on one complaint take turns in this process, so they can work on the
        # cached aggregate itself instead of a deep copy (a fifth of a command's cost);
        # any failure evicts it, so a half-applied command never stays in the cache.
        with self._locks[hash(complaint_id) % len(self._locks)]:
            try:
                return self._execute(complaint_id, command, meta, principal)
            except BaseException:
                self._evict(complaint_id)
                raise

    def _execute(self, complaint_id: UUID, command: ComplaintCommand, meta: Meta,
                 principal: Principal) -> CommandResult:
        complaint = self.get_complaint(complaint_id, for_update=True)
        principal.require_team(complaint.team)
        if complaint.previous_result(meta.command_id, command.action, meta.fingerprint) is not None:
            return self._replay(complaint, meta, command.action)
        if command.expected_version is not None and command.expected_version != complaint.version:
            raise VersionConflict(complaint, command.expected_version)
        ahead = complaint.updated_at - meta.occurred_at
        if command.occurred_at is None and timedelta(0) < ahead <= self.max_clock_skew:
            # The server's clock was read before the complaint was loaded, and another process
            # changed it in between (its clock a little ahead, at most): the command happens
            # after that change.
            meta = dataclasses.replace(meta, occurred_at=max(self.clock(), complaint.updated_at))
        if meta.occurred_at < complaint.updated_at:
            raise InvalidCommand(
                "occurred_at", f"{meta.occurred_at.isoformat()} is before the complaint's last"
                f" change at {complaint.updated_at.isoformat()}: events of one complaint are in order"
            )
        if isinstance(command, MarkDuplicate):
            self.get_complaint(command.duplicate_of)  # the original must exist
        status = complaint.status
        command.carry_out(complaint, meta, self.sla_policy, self.field_definitions)
        if not complaint.pending_events:
            # Nothing to change (a tag it has, values it holds): answered as done, nothing recorded.
            return CommandResult(complaint_id=complaint.id, version=complaint.version, status=complaint.status,
                                 command_id=meta.command_id)
        if complaint.status != status:
            self.field_definitions.require(complaint.fields, complaint.category, complaint.status)
        try:
            self.save(complaint)
        except IntegrityError:
            self._evict(complaint_id)
            current = self.get_complaint(complaint_id)
            if current.previous_result(meta.command_id, command.action, meta.fingerprint) is not None:
                return self._replay(current, meta, command.action)
            raise VersionConflict(current, command.expected_version) from None
        log.info(
            "%s complaint %s -> v%d %s by %s",
            command.action,
            complaint_id,
            complaint.version,
            complaint.status,
            meta.actor,
        )
        return self._result(complaint, meta.command_id)

    # ------------------------------------------------------------------ erasure
    def erase_customer(self, customer_id: str, command: EraseCustomer, principal: Principal) -> ErasureResult:
        """Destroy the customer's keys, then record the erasure on each of their complaints
        (a command id per complaint, so running it again completes what a crash left)."""
        principal.require(command.action)
        if self.keyring is None:
            raise RuntimeError("this desk does not seal personal data (no keyring): nothing to erase")
        erasure = self.keyring.erase(customer_id, command.legal_basis, principal.subject)
        for complaint_id in erasure.complaint_ids:
            self._evict(complaint_id)  # its cached copy holds the personal data in clear
            try:
                complaint = self.get_complaint(complaint_id)
            except ComplaintNotFound:  # its registration was never stored
                continue
            if complaint.personal_data_erased is None:
                self.execute(complaint_id, ErasePersonalData(
                    legal_basis=erasure.legal_basis, command_id=f"erase-personal-data:{complaint_id}",
                    correlation_id=command.correlation_id), principal)
        log.info("erased customer %s (%d complaints)%s", customer_id, len(erasure.complaint_ids),
                 "" if erasure.first_time else ", erased before")
        return ErasureResult(customer_id=customer_id, legal_basis=erasure.legal_basis, erased_at=erasure.erased_at,
                             complaints=erasure.complaint_ids, replayed=not erasure.first_time)

    # ------------------------------------------------------------------ alerts
    def raise_alert(self, command: RaiseAlert, principal: Principal) -> AlertResult:
        def one() -> AlertResult:
            result = self.raise_alerts([command], principal)[0]
            assert isinstance(result, AlertResult)  # a single alert's refusal is raised, not returned
            return result

        return _measured(command.action, one)

    def raise_alerts(self, commands: Sequence[RaiseAlert], principal: Principal) -> list[AlertResult | Exception]:
        """Raise many alerts in one transaction (a rule's sweep); where one of them exists
        already, each is raised on its own, and each answer is a result or the error."""
        principal.require(RAISE_ALERT)
        metas = [self._meta(command, principal) for command in commands]
        for command in commands:
            if command.due_at is not None:
                self._within("due_at", command.due_at)
        alerts = [Alert(**command.event_fields(), **meta.fields()) for command, meta in zip(commands, metas)]
        try:
            self.save(*alerts)
        except IntegrityError:
            if len(alerts) == 1:
                return [self._raised_before(alerts[0].id, metas[0])]
            results: list[AlertResult | Exception] = []
            for command in commands:
                try:
                    results.append(self.raise_alerts([command], principal)[0])
                except Exception as error:  # reported per alert: one refusal must not stop the rest
                    results.append(error)
            return results
        for alert in alerts:
            log.info("raised alert %s (%s, %s)", alert.id, alert.rule, alert.severity)
        return [_alert_result(alert, meta.command_id) for alert, meta in zip(alerts, metas)]

    def _raised_before(self, alert_id: UUID, meta: Meta) -> AlertResult:
        alert = self.get_alert(alert_id)
        if alert.previous_result(meta.command_id, RAISE_ALERT, meta.fingerprint) is None:
            raise AlertAlreadyRaised(alert)
        return _alert_result(alert, meta.command_id, replayed=True)

    def act_on_alert(self, alert_id: UUID, command: AlertCommand, principal: Principal) -> AlertResult:
        return _measured(command.action, lambda: self._act_on(
            alert_id, command, principal, self.get_alert, _alert_result, command.carry_out))

    def _act_on(self, aggregate_id: UUID, command: Command, principal: Principal, load: Callable[..., Any],
                result: Callable[..., Result], carry_out: Callable[[Any, Meta], None],
                permission: str | None = None) -> Result:
        """Load, check, call and save an alert or a subscription (a complaint's commands
        have their own path: the SLA policy, the order of its events)."""
        principal.require(permission or command.action)
        meta = self._meta(command, principal)
        with self._locks[hash(aggregate_id) % len(self._locks)]:
            try:
                aggregate = load(aggregate_id, for_update=True)
                principal.require_team(getattr(aggregate, "team", None))
                if aggregate.previous_result(meta.command_id, command.action, meta.fingerprint) is not None:
                    return result(aggregate, meta.command_id, replayed=True)
                if command.expected_version is not None and command.expected_version != aggregate.version:
                    raise VersionConflict(aggregate, command.expected_version)
                carry_out(aggregate, meta)
                try:
                    self.save(aggregate)
                except IntegrityError:
                    self._evict(aggregate_id)
                    current = load(aggregate_id)
                    if current.previous_result(meta.command_id, command.action, meta.fingerprint) is not None:
                        return result(current, meta.command_id, replayed=True)
                    raise VersionConflict(current, command.expected_version) from None
            except BaseException:
                self._evict(aggregate_id)
                raise
        log.info("%s %s -> %s by %s", command.action, aggregate_id, aggregate.status, meta.actor)
        return result(aggregate, meta.command_id)

    def get_alert(self, alert_id: UUID, version: int | None = None, *, for_update: bool = False) -> Alert:
        try:
            alert = self.repository.get(alert_id, version=version, deepcopy_from_cache=not for_update)
        except AggregateNotFoundError:
            raise AlertNotFound(alert_id) from None
        if not isinstance(alert, Alert):
            raise AlertNotFound(alert_id)
        return alert

    # ------------------------------------------------------------------ subscriptions
    def create_subscription(self, command: CreateSubscription, principal: Principal) -> SubscriptionResult:
        return _measured(command.action, lambda: self._create_subscription(command, principal))

    def _create_subscription(self, command: CreateSubscription, principal: Principal) -> SubscriptionResult:
        principal.require(MANAGE_SUBSCRIPTIONS)
        meta = self._meta(command, principal)
        subscription_id = subscription_id_for(meta.command_id)
        secret = new_webhook_secret() if command.kind == "webhook" else command.secret
        sealed = self._sealer().seal(secret, str(subscription_id)) if secret else None
        subscription = Subscription(**command.event_fields(sealed), **meta.fields())
        try:
            self.save(subscription)
        except IntegrityError:
            # Created before under this command id: answered as the first time, without
            # the secret (shown once); another body under the same id is a 409.
            current = self.get_subscription(subscription_id)
            current.previous_result(meta.command_id, command.action, meta.fingerprint)
            return _subscription_result(current, meta.command_id, replayed=True)
        log.info("subscription %s created: %s to %s", subscription.id, subscription.kind, subscription.endpoint)
        return _subscription_result(subscription, meta.command_id, secret=secret if command.kind == "webhook" else None)

    def act_on_subscription(self, subscription_id: UUID, command: SubscriptionCommand,
                            principal: Principal) -> SubscriptionResult:
        carry_out: Callable[[Any, Meta], None] = command.carry_out
        secret: str | None = None
        if isinstance(command, RotateSecret):
            subscription = self.get_subscription(subscription_id)
            subscription.check_rotation()
            kind = subscription.kind
            secret = new_webhook_secret() if kind == "webhook" else command.secret
            if secret is None:
                raise InvalidCommand("secret", f"a {kind} robot's new secret comes from the vendor's console: give it")
            sealed = self._sealer().seal(secret, str(subscription_id))

            def rotate(subscription: Any, meta: Meta) -> None:
                subscription.rotate_secret(sealed, command.previous_until(meta.occurred_at), meta)
            carry_out = rotate
        result = _measured(command.action, lambda: self._act_on(
            subscription_id, command, principal, self.get_subscription, _subscription_result, carry_out,
            MANAGE_SUBSCRIPTIONS))
        if secret is not None and not result.replayed and self.get_subscription(subscription_id).kind == "webhook":
            result = result.model_copy(update={"secret": secret})
        return result

    def get_subscription(self, subscription_id: UUID, version: int | None = None, *,
                         for_update: bool = False) -> Subscription:
        try:
            subscription = self.repository.get(subscription_id, version=version, deepcopy_from_cache=not for_update)
        except AggregateNotFoundError:
            raise SubscriptionNotFound(subscription_id) from None
        if not isinstance(subscription, Subscription):
            raise SubscriptionNotFound(subscription_id)
        return subscription

    def subscription_secrets(self, subscription: Subscription, now: datetime) -> list[str]:
        """The secrets a request signed at `now` carries, unsealed (the notifier's)."""
        return [self._sealer().unseal(sealed, str(subscription.id)) for sealed in subscription.secrets_at(now)]

    def _sealer(self) -> Sealer:
        if self.sealer is None:
            raise RuntimeError("this desk has no master key for secrets (COMPLAINTS_SECRETS_KEY)")
        return self.sealer

    # ------------------------------------------------------------------ queries
    def complaint_for(self, principal: Principal, complaint_id: UUID, version: int | None = None) -> dict[str, Any]:
        """The complaint's state as `principal` may see it: within its team, its customer's
        personal data masked unless the principal may see it, and then the view recorded."""
        principal.require(READ_COMPLAINT)
        complaint = self.get_complaint(complaint_id, version)
        principal.require_team(complaint.team)
        state: dict[str, Any] = complaint.state()
        # What this principal may do to it now (the workspace's buttons): the status allows it
        # and the role does (an agent's assignment is taking it, to itself).
        state["allowed_actions"] = [
            action for action in actions_in(complaint.status)
            if principal.may(principal.permission_for(action, complaint.team, principal.subject))]
        if principal.may(PERSONAL_DATA) and self.access_log is not None:
            self.access_log.record(principal, [complaint_id], via="complaint", at=self.clock())
            return state
        shown: dict[str, Any] = masked(state)  # type: ignore[assignment]  # shown only where the view is on record
        # The desk holds the opened originals: free text masked, attachment names hidden too.
        shown["title"], shown["description"] = mask_personal(state["title"]), mask_personal(state["description"])
        shown["attachments"] = [{**a, "filename": MASK} if a.get("filename") else a for a in state["attachments"]]
        shown["fields"] = hidden_field_values(state["fields"], MASK)
        return shown

    def get_complaint(
        self, complaint_id: UUID, version: int | None = None, *, for_update: bool = False
    ) -> Complaint:
        """The complaint (a private copy unless `for_update`, which needs the lock)."""
        try:
            complaint: Complaint = self.repository.get(
                complaint_id, version=version, deepcopy_from_cache=not for_update
            )
        except AggregateNotFoundError:
            raise ComplaintNotFound(complaint_id) from None
        if not isinstance(complaint, Complaint):
            raise ComplaintNotFound(complaint_id)
        return complaint

    # ------------------------------------------------------------------ helpers
    def _evict(self, complaint_id: UUID) -> None:
        if self.repository.cache is not None:
            try:
                self.repository.cache.get(complaint_id, evict=True)
            except KeyError:
                pass

    def _meta(self, command: Command, principal: Principal) -> Meta:
        command_id = command.command_id or str(uuid4())
        return Meta(
            actor=principal.subject,
            occurred_at=self._occurred_at(command, principal),
            command_id=command_id,
            # The conversation: the command's own, else the HTTP request's (so one id runs
            # from the client's request through the event to the read side's log lines).
            correlation_id=command.correlation_id or current_correlation_id() or command_id,
            acted_as=principal.acted_as(),
            fingerprint=fingerprint(command, principal.subject),
        )

    def _occurred_at(self, command: Command, principal: Principal) -> datetime:
        """The server owns time: only an importer states when a command happened, and never
        later than now (give or take the clocks' skew) nor before the window's earliest
        instant (1970 unless configured); the server's own clock must be in the window too."""
        now = self.clock()
        if command.occurred_at is None:
            return self._within("occurred_at", now, f"the server's clock ({now.isoformat()})")
        if not principal.may(BACKDATE):
            raise InvalidCommand("occurred_at", "only an importer may state occurred_at: leave it"
                                 " out and the server's clock is used")
        if command.occurred_at > now + self.max_clock_skew:
            raise InvalidCommand("occurred_at", f"{command.occurred_at.isoformat()} is in the future"
                                 f" (the server's clock says {now.isoformat()})")
        return self._within("occurred_at", command.occurred_at)

    def _within(self, field: str, instant: datetime, what: str | None = None) -> datetime:
        """`instant` if it lies in the window of instants, else a 422 naming `field`."""
        if instant not in self.instants:
            raise InvalidCommand(field, f"{what or instant.isoformat()} is outside the instants this system"
                                 f" accepts ({self.instants.describe()})")
        return instant

    @staticmethod
    def _result(complaint: Complaint, command_id: str, replayed: bool = False) -> CommandResult:
        done: dict[str, Any] = complaint.commands[command_id]
        return CommandResult(
            complaint_id=complaint.id,
            version=done["version"],
            status=done["status"],
            command_id=command_id,
            replayed=replayed,
        )

    def _replay(self, complaint: Complaint, meta: Meta, action: str) -> CommandResult:
        complaint.previous_result(meta.command_id, action, meta.fingerprint)  # raises unless the same command
        log.info("command %s seen before: answering with its first result", meta.command_id)
        return self._result(complaint, meta.command_id, replayed=True)


def _write_keys_with_events(recorder: Any, keyring: Keyring) -> None:
    """Make `recorder` write the keyring's new rows (a new customer's key, a complaint's
    customer) in the transaction that stores the events sealed under them: eventsourcing's
    recorders call `_insert_events` with that transaction's cursor, before the events."""
    base = type(recorder)

    def _insert_events(self: Any, cursor: Any, stored_events: Any, **kwargs: Any) -> Any:
        keyring.write_pending(cursor)
        return base._insert_events(self, cursor, stored_events, **kwargs)

    recorder.__class__ = type(f"KeyWriting{base.__name__}", (base,), {"_insert_events": _insert_events})


def _alert_result(alert: Alert, command_id: str, replayed: bool = False) -> AlertResult:
    done: dict[str, Any] = alert.commands[command_id]
    return AlertResult(alert_id=alert.id, version=done["version"], status=done["status"], command_id=command_id,
                       replayed=replayed)


def _subscription_result(subscription: Subscription, command_id: str, replayed: bool = False,
                         secret: str | None = None) -> SubscriptionResult:
    done: dict[str, Any] = subscription.commands[command_id]
    return SubscriptionResult(subscription_id=subscription.id, version=done["version"], status=done["status"],
                              command_id=command_id, replayed=replayed, secret=secret)


def outcome_of(error: BaseException) -> str:
    """The metrics' outcome of a command that raised (see commands.metrics)."""
    if isinstance(error, AccessDenied):
        return "forbidden"
    if isinstance(error, (ComplaintNotFound, AlertNotFound)):
        return "not_found"
    if isinstance(error, (DomainError, VersionConflict)):
        return "conflict"
    if isinstance(error, (ValidationError, InvalidCommand, FieldValuesInvalid)):
        return "invalid"
    return "error"


Result = TypeVar("Result", CommandResult, AlertResult, SubscriptionResult)


def _measured(action: str, call: Callable[[], Result]) -> Result:
    """Carry out the command, counting it by outcome and timing it (commands.metrics)."""
    started = time.perf_counter()
    try:
        result = call()
    except BaseException as error:
        record_command(action, outcome_of(error), time.perf_counter() - started)
        raise
    record_command(action, "duplicate" if result.replayed else "accepted", time.perf_counter() - started)
    return result
