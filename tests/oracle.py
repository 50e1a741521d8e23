"""The oracle: every read-model figure, computed the slow and obvious way.

A plain-Python fold over the full list of event envelopes (ordered by position), then
each figure by loops and Counters, with business time from `aggregates.sla` directly
(`elapsed_business_seconds`, `business_seconds_between`). No SQL, no shared code with
`projections/` beyond the definitions in docs/read-models.md. The read-model tests demand
that DuckDB's answers equal these, exactly.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

from aggregates.sla import BusinessCalendar, SlaPolicy, elapsed_business_seconds
from aggregates.envelope import EventEnvelope

OPEN = {"received", "triaged", "assigned", "waiting_on_customer", "resolution_proposed"}
RESOLVED = {"resolved", "verified", "closed"}
AGE_BUCKETS = ((1, "<1h"), (4, "1-4h"), (24, "4-24h"), (72, "1-3d"), (168, "3-7d"))
SLA_GROUPINGS = (None, "team", "agent", "severity", "category", "channel", "priority", "day", "week", "month")
VOLUME_GROUPINGS = (None, "category", "product", "channel", "region", "severity", "tier")
WOW_GROUPINGS = (None, "product", "category")
PERIODS = ("day", "week", "month")
NEXT_RESPONSE_EVENTS = ("ContactRecorded", "CustomerReplied", "ResolutionProposed", "Resolved",
                        "Withdrawn", "MarkedDuplicate")


def ts(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def us(delta: timedelta) -> int:
    return delta // timedelta(microseconds=1)


@dataclass
class Case:
    """One complaint, folded from its events."""

    id: str
    registered_at: datetime
    position: int
    channel: str
    customer_id: str
    tier: str
    product: str | None
    region: str | None
    category: str | None = None
    severity: str | None = None
    priority: str | None = None
    calendar: str | None = None
    fr_due: datetime | None = None
    res_due: datetime | None = None
    team: str | None = None
    agent: str | None = None
    handovers: list[tuple[str, str]] = field(default_factory=list)  # (from team, to team)
    first_response_at: datetime | None = None
    status: str = "received"
    before_wait: str | None = None
    waiting_since: datetime | None = None
    pauses: list[tuple[datetime, datetime]] = field(default_factory=list)
    resolutions: list[tuple[datetime, str | None, str | None]] = field(default_factory=list)
    resolved_at: datetime | None = None
    terminated_at: datetime | None = None
    reopen_count: int = 0
    waits: int = 0
    responses_before_first_resolution: int = 0
    intervals: list[list[datetime | None]] = field(default_factory=list)
    ratings: list[tuple[datetime, int, int | None, int | None]] = field(default_factory=list)
    # next-response clocks: [started_at, due_at, stopped_at, stopping event type]
    next_clocks: list[list[Any]] = field(default_factory=list)


def fold(envelopes: Iterable[EventEnvelope]) -> dict[str, Case]:
    cases: dict[str, Case] = {}
    for e in sorted(envelopes, key=lambda e: e.position):
        cid, p, at = str(e.complaint_id), e.payload, e.occurred_at
        if e.event_type == "Registered":
            cases[cid] = Case(
                cid, at, e.position, p["channel"], p["customer"]["id"], p["customer"]["tier"],
                p.get("product"), p.get("region"), intervals=[[at, None]],
            )
            continue
        c = cases[cid]
        kind = e.event_type
        if kind in NEXT_RESPONSE_EVENTS:
            # the domain states what reply is awaited; proposals, resolutions and ends clear it
            due = ts(p.get("next_response_due")) if kind in ("ContactRecorded", "CustomerReplied") else None
            running = c.next_clocks[-1] if c.next_clocks and c.next_clocks[-1][2] is None else None
            if running is not None and due != running[1]:
                running[2], running[3], running = at, kind, None
            if due is not None and running is None:
                c.next_clocks.append([at, due, None, None])
        if p.get("first_response_at") and c.first_response_at is None:
            c.first_response_at = ts(p["first_response_at"])
        if kind == "Triaged":
            c.category, c.severity, c.priority = p["category"], p["severity"], p["priority"]
            c.calendar = p["sla_calendar"]
            c.fr_due, c.res_due = ts(p["first_response_due"]), ts(p["resolution_due"])
            if c.status == "received":
                c.status = "triaged"
        elif kind == "Assigned":
            if c.team is not None:
                c.handovers.append((c.team, p["team"]))
            c.team, c.agent = p["team"], p["agent"]
            if c.status == "triaged":
                c.status = "assigned"
        elif kind == "ContactRecorded":
            if p["direction"] == "outbound" and p["visibility"] == "public" and not c.resolutions:
                c.responses_before_first_resolution += 1
        elif kind == "WaitingOnCustomer":
            c.before_wait, c.status, c.waiting_since = c.status, "waiting_on_customer", at
            c.waits += 1
        elif kind == "CustomerReplied":
            assert c.waiting_since is not None and c.before_wait is not None
            c.pauses.append((c.waiting_since, at))
            c.status, c.waiting_since, c.before_wait = c.before_wait, None, None
            c.res_due = ts(p["resolution_due"])
        elif kind == "ResolutionProposed":
            c.status = "resolution_proposed"
        elif kind == "Resolved":
            c.status, c.resolved_at = "resolved", at
            c.resolutions.append((at, c.team, c.agent))
            c.intervals[-1][1] = at
        elif kind == "Verified":
            c.status = "verified"
            c.ratings.append((at, p["csat"], p.get("nps"), p.get("effort")))
        elif kind == "Closed":
            c.status = "closed"
        elif kind == "Reopened":
            c.status, c.resolved_at = "assigned", None
            c.reopen_count += 1
            c.intervals.append([at, None])
        elif kind in ("Withdrawn", "MarkedDuplicate"):
            c.status = "withdrawn" if kind == "Withdrawn" else "duplicate"
            c.terminated_at = at
            c.intervals[-1][1] = at
    return cases


class Oracle:
    def __init__(self, envelopes: Iterable[EventEnvelope], now: datetime, tz: str, policy: SlaPolicy) -> None:
        self.cases = fold(envelopes)
        self.now = now
        self.tz = ZoneInfo(tz)
        self.policy = policy

    # -- helpers ------------------------------------------------------------------------
    def local(self, t: datetime) -> date:
        return t.astimezone(self.tz).date()

    def period(self, t: datetime, period: str) -> date:
        d = self.local(t)
        if period == "week":
            return d - timedelta(days=d.weekday())
        if period == "month":
            return d.replace(day=1)
        return d

    def midnight(self) -> datetime:
        return datetime.combine(self.local(self.now), time(0), self.tz).astimezone(UTC)

    def key(self, c: Case, by: str | None) -> Any:
        if by is None:
            return None
        if by in PERIODS:
            return self.period(c.registered_at, by)
        return getattr(c, by)

    def calendar(self, c: Case) -> BusinessCalendar | None:
        return self.policy.calendars.get(c.calendar) if c.calendar else None

    # -- SLA ----------------------------------------------------------------------------
    def clock(self, c: Case, metric: str, cycle: int = 1) -> dict[str, Any]:
        start = c.registered_at
        if metric == "first_response":
            due, paused_since, pauses = c.fr_due, None, []
            stop = c.first_response_at or c.terminated_at
            reason = "responded" if c.first_response_at else (c.status if c.terminated_at else None)
        elif metric == "next_response":
            start, due, stop, stop_type = c.next_clocks[cycle - 1]
            paused_since, pauses = None, []
            reason = {None: None, "Withdrawn": "withdrawn", "MarkedDuplicate": "duplicate"}.get(
                stop_type, "responded")
        else:
            due, paused_since, pauses = c.res_due, c.waiting_since, list(c.pauses)
            stop = c.resolved_at or c.terminated_at
            reason = "resolved" if c.resolved_at else (c.status if c.terminated_at else None)
        end = stop or self.now
        if paused_since is not None:
            pauses.append((paused_since, end))
        if stop is None:
            if due is not None and (paused_since or self.now) > due:
                status = "breached"
            elif paused_since is not None:
                status = "paused"
            elif due is not None and self.now >= due - timedelta(minutes=self.policy.warning_before_minutes):
                status = "warning"
            else:
                status = "activated"
        elif due is not None and (paused_since or stop) > due:
            status = "breached"
        elif reason in ("responded", "resolved"):
            status = "fulfilled"
        else:
            status = "cancelled"
        cal = self.calendar(c)
        business = paused_business = None
        if cal is not None:
            business = elapsed_business_seconds(cal, start, end, pauses)
            paused_business = sum(
                round(Fraction(cal.business_seconds_between(a, min(b, end))) * 1_000_000)
                for a, b in pauses
            ) / 1_000_000
        return {
            "complaint_id": c.id, "metric": metric, "cycle": cycle, "team": c.team, "agent": c.agent,
            "severity": c.severity, "category": c.category, "channel": c.channel,
            "started_at": start, "due_at": due, "stopped_at": stop, "stop_reason": reason,
            "status": status, "paused_since": paused_since, "business_seconds": business,
            "paused_seconds": sum(us(min(b, end) - a) for a, b in pauses) / 1_000_000,
            "paused_business_seconds": paused_business,
        }

    def clocks_of(self, c: Case) -> list[dict[str, Any]]:
        return [
            self.clock(c, "first_response"), self.clock(c, "resolution"),
            *(self.clock(c, "next_response", n + 1) for n in range(len(c.next_clocks))),
        ]

    def sla_clocks(self) -> list[dict[str, Any]]:
        return [k for c in self.cases.values() for k in self.clocks_of(c)]

    def sla_clock_events(self) -> list[dict[str, Any]]:
        """Each clock's life up to now, event by event (docs/read-models.md)."""
        lead = timedelta(minutes=self.policy.warning_before_minutes)
        out = []
        for c in self.cases.values():
            for k in self.clocks_of(c):
                stop = k["stopped_at"]
                ends = k["paused_since"] or stop
                pauses: list[tuple[datetime, datetime | None]] = []
                if k["metric"] == "resolution":
                    waits = [*c.pauses, *([(c.waiting_since, None)] if c.waiting_since else [])]
                    pauses = [(a, b if b is not None and (stop is None or b <= stop) else None)
                              for a, b in waits if stop is None or a <= stop]
                life = [("activated", k["started_at"])]
                life += [("paused", a) for a, _ in pauses] + [("resumed", b) for _, b in pauses if b]
                due = k["due_at"]
                if due is not None:
                    warn = max(k["started_at"], due - lead)
                    covering = [b for a, b in pauses if a <= warn and (b is None or warn < b)]
                    if covering:
                        warn = covering[0]
                    if warn is not None and (ends is None or warn < ends):
                        life.append(("warned", warn))
                    if ends is None or due < ends:
                        life.append(("breached", due))
                if stop is not None:
                    life.append(("fulfilled" if k["stop_reason"] in ("responded", "resolved") else "cancelled", stop))
                out += [
                    {"complaint_id": c.id, "metric": k["metric"], "cycle": k["cycle"], "event": event,
                     "occurred_at": at, "due_at": due, "team": c.team, "agent": c.agent,
                     "severity": c.severity}
                    for event, at in life if at <= self.now
                ]
        return out

    def sla_attainment(self, by: str | None) -> list[dict[str, Any]]:
        groups: dict[tuple[Any, str], list[dict[str, Any]]] = defaultdict(list)
        for c in self.cases.values():
            for k in self.clocks_of(c):
                groups[(self.key(c, by), k["metric"])].append(k)
        out = []
        for (key, metric), clocks in groups.items():
            met = sum(1 for k in clocks if k["status"] == "fulfilled" and k["due_at"] is not None)
            breached = sum(1 for k in clocks if k["status"] == "breached")
            counted = met + breached
            timed = sorted(
                round(Fraction(k["business_seconds"]) * 1_000_000)
                for k in clocks
                if k["stop_reason"] in ("responded", "resolved") and k["business_seconds"] is not None
            )
            out.append({
                "key": key, "metric": metric, "counted": counted, "met": met, "breached": breached,
                "attainment": met / counted if counted else None,
                "timed": len(timed),
                "avg_business_seconds": sum(timed) / len(timed) / 1_000_000 if timed else None,
                "p90_business_seconds": (
                    timed[max(0, math.ceil(len(timed) * 0.9) - 1)] / 1_000_000 if timed else None
                ),
            })
        return out

    def sla_at_risk(self) -> list[dict[str, Any]]:
        return [
            {"complaint_id": k["complaint_id"], "metric": k["metric"], "status": k["status"],
             "due_at": k["due_at"], "team": k["team"], "agent": k["agent"], "severity": k["severity"]}
            for k in self.sla_clocks()
            if k["stopped_at"] is None and k["status"] in ("warning", "breached")
        ]

    # -- workload -----------------------------------------------------------------------
    def open_complaints(self) -> list[dict[str, Any]]:
        counts: Counter[tuple[Any, ...]] = Counter()
        for c in self.cases.values():
            if c.status in OPEN:
                age = us(self.now - c.registered_at)
                bucket = next((label for hours, label in AGE_BUCKETS if age < hours * 3_600_000_000), ">7d")
                counts[(c.team, c.agent, c.status, bucket)] += 1
        return [
            {"team": k[0], "agent": k[1], "status": k[2], "age_bucket": k[3], "count": n}
            for k, n in counts.items()
        ]

    def today(self) -> dict[str, Any]:
        start = self.midnight()
        return {
            "day": self.local(self.now),
            "new": sum(1 for c in self.cases.values() if start <= c.registered_at <= self.now),
            "pending": sum(1 for c in self.cases.values() if c.status in OPEN),
            "resolved": sum(
                1 for c in self.cases.values() if any(start <= r[0] <= self.now for r in c.resolutions)
            ),
        }

    def agent_load(self) -> list[dict[str, Any]]:
        start, since = self.midnight(), self.now - timedelta(days=7)
        rows: dict[tuple[Any, Any], dict[str, int]] = defaultdict(
            lambda: {"open": 0, "resolved_today": 0, "resolved_7d": 0}
        )
        for c in self.cases.values():
            if c.status in OPEN and c.team is not None:
                rows[(c.team, c.agent)]["open"] += 1
            for at, team, agent in c.resolutions:
                row = rows[(team, agent)]
                row["resolved_today"] += start <= at <= self.now
                row["resolved_7d"] += since <= at <= self.now
        return [
            {"team": t, "agent": a, **r} for (t, a), r in rows.items() if r["open"] > 0 or r["resolved_7d"] > 0
        ]

    def handovers(self) -> list[dict[str, Any]]:
        counts = Counter(h for c in self.cases.values() for h in c.handovers)
        return [{"from_team": f, "to_team": t, "count": n} for (f, t), n in counts.items()]

    def backlog(self) -> list[dict[str, Any]]:
        spans = [
            (self.local(a), self.local(b) if b is not None else None)
            for c in self.cases.values() for a, b in c.intervals
        ]
        if not spans:
            return []
        day, last, out = min(s[0] for s in spans), self.local(self.now), []
        while day <= last:
            out.append({"day": day, "open": sum(1 for a, b in spans if a <= day and (b is None or b > day))})
            day += timedelta(days=1)
        return out

    # -- trends -------------------------------------------------------------------------
    def volume(self, period: str, by: str | None) -> list[dict[str, Any]]:
        counts = Counter((self.period(c.registered_at, period), self.key(c, by)) for c in self.cases.values())
        return [{"period": p, "key": k, "count": n} for (p, k), n in counts.items()]

    def week_over_week(self, by: str | None) -> list[dict[str, Any]]:
        counts = Counter((self.period(c.registered_at, "week"), self.key(c, by)) for c in self.cases.values())
        if not counts:
            return []
        weeks = sorted({w for w, _ in counts})
        keys = {k for _, k in counts}
        grid = [weeks[0] + timedelta(days=7 * i) for i in range((weeks[-1] - weeks[0]).days // 7 + 1)]
        out = []
        for k in keys:
            previous = None
            for w in grid:
                n = counts.get((w, k), 0)
                out.append({"week": w, "key": k, "count": n, "previous": previous,
                            "growth": (n - previous) / previous if previous else None})
                previous = n
        return out

    def top_categories(self, n: int = 5) -> list[dict[str, Any]]:
        counts = Counter(c.category for c in self.cases.values() if c.category is not None)
        total = sum(counts.values())
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
        return [{"category": k, "count": v, "share": v / total} for k, v in ranked]

    def ratings(self, period: str | None) -> list[dict[str, Any]]:
        groups: dict[Any, list[tuple[int, int | None, int | None]]] = defaultdict(list)
        for c in self.cases.values():
            for at, csat, nps, effort in c.ratings:
                groups[self.period(at, period) if period else None].append((csat, nps, effort))
        out = []
        for key, rs in groups.items():
            npss = [r[1] for r in rs if r[1] is not None]
            efforts = [r[2] for r in rs if r[2] is not None]
            promoters = sum(1 for x in npss if x >= 9)
            detractors = sum(1 for x in npss if x <= 6)
            out.append({
                "period": key, "ratings": len(rs),
                "avg_csat": sum(r[0] for r in rs) / len(rs),
                "avg_nps": sum(npss) / len(npss) if npss else None,
                "nps_score": 100.0 * (promoters - detractors) / len(npss) if npss else None,
                "avg_effort": sum(efforts) / len(efforts) if efforts else None,
            })
        return out

    def rates(self) -> dict[str, Any]:
        cases = list(self.cases.values())
        by_customer: dict[str, list[Case]] = defaultdict(list)
        for c in cases:
            by_customer[c.customer_id].append(c)
        repeats = 0
        for mine in by_customer.values():
            mine.sort(key=lambda c: (c.registered_at, c.position))
            repeats += sum(
                1 for a, b in zip(mine, mine[1:]) if b.registered_at - a.registered_at <= timedelta(days=7)
            )
        resolved = [c for c in cases if c.resolutions]
        fcr = [
            c for c in resolved
            if c.reopen_count == 0 and not c.handovers and c.waits == 0
            and c.responses_before_first_resolution <= 1
        ]
        reopened = [c for c in cases if c.reopen_count > 0]
        handled = [us(c.resolved_at - c.registered_at) for c in cases if c.resolved_at is not None]
        return {
            "complaints": len(cases),
            "resolved": len(resolved),
            "first_contact_resolved": len(fcr),
            "fcr_rate": len(fcr) / len(resolved) if resolved else None,
            "reopened": len(reopened),
            "reopen_rate": len(reopened) / len(resolved) if resolved else None,
            "repeats": repeats,
            "repeat_rate": repeats / len(cases) if cases else None,
            "handled": len(handled),
            "avg_handling_seconds": sum(handled) / len(handled) / 1_000_000 if handled else None,
        }

    # -- everything ---------------------------------------------------------------------
    def figures(self) -> dict[str, Any]:
        return {
            "now": self.now,
            "sla_clocks": self.sla_clocks(),
            "sla_attainment": {by: self.sla_attainment(by) for by in SLA_GROUPINGS},
            "sla_at_risk": self.sla_at_risk(),
            "open_complaints": self.open_complaints(),
            "today": self.today(),
            "agent_load": self.agent_load(),
            "handovers": self.handovers(),
            "backlog": self.backlog(),
            "volume": {(p, by): self.volume(p, by) for p in PERIODS for by in VOLUME_GROUPINGS},
            "week_over_week": {by: self.week_over_week(by) for by in WOW_GROUPINGS},
            "top_categories": self.top_categories(),
            "ratings": {p: self.ratings(p) for p in (None, *PERIODS)},
            "rates": self.rates(),
        }


def canonical(value: Any) -> Any:
    """Figures in a comparable form: lists of rows sorted (except ranked ones), UTC instants."""
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        rows = [canonical(v) for v in value]
        return sorted(rows, key=_sort_key)
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return value


def _sort_key(row: Any) -> Any:
    if isinstance(row, dict):
        return tuple(_sort_key(v) for v in row.values())
    return (row is not None, str(row))
