"""Realistic demo workloads, sent as ordinary commands through the desk.

Skewed customers and products (a few account for most complaints), weekday and
hour-of-day seasonality, VIPs, waits on the customer, SLA breaches, reopenings and a
surge of one problem. Deterministic for a given seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from tqdm import tqdm

from aggregates.access import Principal
from commands.desk import ComplaintDesk
from commands.models import COMPLAINT_COMMANDS, RegisterComplaint

PRODUCTS = ["mobile-app", "smart-speaker", "router-x2", "billing-portal", "delivery", "tv-box"]
CATEGORIES = {
    "product_defect": ["App crashes at login", "Device unusable after update", "Speaker keeps rebooting"],
    "logistics": ["Parcel late by a week", "Wrong item delivered", "Box damaged"],
    "billing": ["Charged twice", "Invoice missing", "Possible fraud on my account"],
    "service_attitude": ["Agent was rude", "Nobody called back"],
    "account": ["Cannot reset password", "Account locked"],
    "feature_request": ["Please add dark mode", "Export to Excel"],
}
REGIONS = ["Guangdong", "Shanghai", "Beijing", "Zhejiang", "Jiangsu", "Sichuan", "Hubei", "Shandong"]
CHANNELS = ["phone", "wechat", "web", "app", "email", "store", "social_media"]
TEAMS = {"product_defect": "tech-support", "logistics": "logistics", "billing": "billing",
         "service_attitude": "customer-care", "account": "customer-care", "feature_request": "product"}
AGENTS = {team: [f"{team}-{i}" for i in range(1, 5)] for team in set(TEAMS.values())}
# Complaints per hour of a local working day (Asia/Shanghai), heavier late morning.
HOUR_WEIGHTS = [1, 1, 1, 1, 1, 1, 2, 4, 8, 12, 14, 12, 8, 10, 12, 11, 9, 7, 5, 4, 3, 2, 2, 1]


def skewed(rng: random.Random, items: list[Any], s: float = 1.2) -> Any:
    """Zipf-like pick: the first items are chosen far more often."""
    weights = [1 / (rank**s) for rank in range(1, len(items) + 1)]
    return rng.choices(items, weights)[0]


def demo_commands(count: int, end: datetime, days: int = 30, seed: int = 7) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, command fields) pairs in time order; path "register" starts a complaint.

    Each complaint's later commands refer to it by the register command's id, as
    `complaint_command_id`.
    """
    rng = random.Random(seed)
    customers = [f"C-{n:05d}" for n in range(max(10, count // 3))]
    vip = set(rng.sample(customers, max(1, len(customers) // 10)))
    surge_day = end - timedelta(days=3)
    plans: list[tuple[datetime, str, dict[str, Any]]] = []
    for n in range(count):
        day = end - timedelta(days=rng.uniform(0, days))
        if day.weekday() >= 5 and rng.random() < 0.6:
            day -= timedelta(days=2)  # fewer complaints at weekends
        hour = rng.choices(range(24), HOUR_WEIGHTS)[0]
        at = day.replace(hour=hour, minute=rng.randrange(60), second=rng.randrange(60),
                         microsecond=0) - timedelta(hours=8)
        category = skewed(rng, list(CATEGORIES))
        if rng.random() < 0.1:
            at, category = surge_day + timedelta(minutes=rng.randrange(600)), "product_defect"
        if at >= end - timedelta(minutes=5):
            at = end - timedelta(minutes=rng.randrange(5, 600))
        customer = skewed(rng, customers, 0.8)
        cid = f"demo-{seed}-{n}"
        plans.extend(_life(rng, cid, at, end, customer, customer in vip, category))
    plans.sort(key=lambda plan: plan[0])
    for _, path, fields in plans:
        yield path, fields


def _life(rng: random.Random, cid: str, at: datetime, end: datetime, customer: str, vip: bool,
          category: str) -> list[tuple[datetime, str, dict[str, Any]]]:
    team = TEAMS[category]
    steps: list[tuple[datetime, str, dict[str, Any]]] = []

    def step(minutes: float, path: str, **fields: Any) -> bool:
        nonlocal at
        at = at + timedelta(minutes=minutes)
        if at >= end:
            return False
        actor = fields.pop("actor", "agent")
        fields |= {"actor": actor, "occurred_at": at.isoformat()}
        fields.setdefault("command_id", f"{cid}-{len(steps)}")
        if path != "register":
            fields["complaint_command_id"] = cid
        steps.append((at, path, fields))
        return True

    title = rng.choice(CATEGORIES[category])
    step(0, "register", actor="intake", command_id=cid, channel=rng.choice(CHANNELS),
         customer={"id": customer, "tier": "vip" if vip else "regular"},
         customer_personal={"name": f"Customer {customer}", "contact": f"{customer.lower()}@example.com"},
         title=title, description=f"{title}. Order placed last week.",
         product=skewed(rng, PRODUCTS), region=skewed(rng, REGIONS, 0.7), order_ref=f"ORD-{rng.randrange(10**6):06d}")
    severity = rng.choices(["fatal", "major", "normal", "minor"], [2, 15, 60, 23])[0]
    if not step(rng.expovariate(1 / 20), "triage", category=category, severity=severity,
                impact=rng.choices(["one_user", "some_users", "all_users"], [85, 12, 3])[0]):
        return steps
    agent = rng.choice(AGENTS[team])
    if not step(rng.expovariate(1 / 30), "assign", team=team, agent=agent):
        return steps
    # Slow agents breach: the response delay is heavy-tailed.
    if not step(rng.expovariate(1 / 90) * (6 if rng.random() < 0.15 else 1), "contacts",
                actor=agent, direction="outbound", channel="phone", summary="Called the customer"):
        return steps
    if rng.random() < 0.3:
        if not step(rng.expovariate(1 / 60), "wait-on-customer", actor=agent, reason="Need details"):
            return steps
        if not step(rng.expovariate(1 / 600), "customer-replied", actor="customer", summary="Details sent"):
            return steps
    if rng.random() < 0.1:
        if not step(30, "assign", team=team, agent=rng.choice([a for a in AGENTS[team] if a != agent])):
            return steps
    if not step(rng.expovariate(1 / 900), "resolve", actor=agent, resolution="Fixed"):
        return steps
    if rng.random() < 0.7:
        if not step(rng.expovariate(1 / 600), "verify", actor="customer", csat=rng.choices(range(1, 6), [5, 7, 15, 35, 38])[0],
                    nps=rng.choices(range(11), [2, 1, 1, 2, 3, 5, 7, 10, 20, 25, 24])[0], effort=rng.randint(1, 7)):
            return steps
    if rng.random() < 0.08:
        if not step(rng.expovariate(1 / 1440), "reopen", actor="customer", reason="Problem is back"):
            return steps
        if not step(rng.expovariate(1 / 600), "resolve", actor=agent, resolution="Fixed again"):
            return steps
    step(rng.expovariate(1 / 1440), "close", actor="system")
    return steps


def load_demo(desk: ComplaintDesk, count: int, end: datetime | None = None, seed: int = 7,
              progress: bool = True, stop: Callable[[], bool] = lambda: False) -> int:
    """Send the demo workload through `desk` until done or `stop()`; returns the number of
    commands sent."""
    end = end or desk.clock()
    ids: dict[str, UUID] = {}
    sent = 0
    for path, fields in tqdm(list(demo_commands(count, end, seed=seed)), desc="demo commands",
                             unit="cmd", disable=not progress):
        if stop():
            break
        send(desk, ids, path, fields)
        sent += 1
    return sent


def send(desk: ComplaintDesk, ids: dict[str, UUID], path: str, fields: dict[str, Any]) -> None:
    """Send one demo command; `ids` maps register command ids to the complaints they made.

    The demo imports a past month, so its people act as importers: only an importer may
    state when a command happened.
    """
    fields = dict(fields)
    actor = fields.pop("actor")
    principal = Principal(actor, actor, frozenset({"importer"}))
    if path == "register":
        ids[fields["command_id"]] = desk.register(RegisterComplaint.model_validate(fields), principal).complaint_id
    else:
        complaint_id = ids[fields.pop("complaint_command_id")]
        desk.execute(complaint_id, COMPLAINT_COMMANDS[path].model_validate(fields), principal)
