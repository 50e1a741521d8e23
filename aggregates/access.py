"""Who may do what: the roles, the permission matrix and the row-level rule.

Pure domain: a `Principal` is whoever a verified token (or the process itself) says is
acting; this module decides what that principal may do. The matrix is the one table of
the product's access rules; `docs/security.md` is generated from it
(`complaints roles --markdown`) and `tests/test_access.py` keeps the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

Role = Literal[
    "intake", "agent", "supervisor", "department_head", "quality", "executive", "auditor",
    "analyst", "admin", "automation", "importer", "customer", "notifier",
]
ROLES: tuple[Role, ...] = get_args(Role)

ROLE_NAMES: dict[Role, tuple[str, str]] = {  # (en, zh-CN)
    "intake": ("intake agent (phone, counter, forms)", "受理专员"),
    "agent": ("complaint handler", "处理专员"),
    "supervisor": ("team lead", "组长"),
    "department_head": ("department head", "部门负责人"),
    "quality": ("product and quality", "产品与质量"),
    "executive": ("executive", "管理层"),
    "auditor": ("auditor", "审计"),
    "analyst": ("analyst", "分析师"),
    "admin": ("administrator", "系统管理员"),
    "automation": ("automation (service)", "自动化规则（服务）"),
    "importer": ("importer (service)", "数据导入（服务）"),
    "customer": ("customer, through a signed link", "客户（凭签名链接）"),
    "notifier": ("notifier (service)", "通知（服务）"),
}

# Commands: one permission per action, named as the action.
HANDLING = frozenset({
    "add_note", "record_contact", "wait_on_customer", "customer_replied", "propose_resolution",
    "resolve", "verify", "close", "escalate", "withdraw", "mark_duplicate",
    "update_fields", "add_tag", "remove_tag",  # the desk's own vocabulary: custom fields and tags
})
COMMANDS = HANDLING | {"register", "triage", "assign", "reopen"}
# An agent takes work from its team's queue: an assignment of a complaint of its own team to
# itself, and no other (`Principal.permission_for`).
TAKE = "take"
# Alerts: raised by rules, taken on (acknowledged) and resolved by people or by the rule.
RAISE_ALERT, ACKNOWLEDGE_ALERT, RESOLVE_ALERT = "raise_alert", "acknowledge_alert", "resolve_alert"

# Knowledge articles: the automation drafts them from well-rated solutions; quality and the
# leads edit, publish and retire them (docs/knowledge.md).
DRAFT_ARTICLE, EDIT_ARTICLE, PUBLISH_ARTICLE, RETIRE_ARTICLE = (
    "draft_article", "edit_article", "publish_article", "retire_article")
KNOWLEDGE = frozenset({DRAFT_ARTICLE, EDIT_ARTICLE, PUBLISH_ARTICLE, RETIRE_ARTICLE})

# What is read, and how.
READ_COMPLAINT = "read:complaint"  # one complaint as it stands (command API)
READ_AUDIT = "read:audit"  # a complaint's history, states, timeline, clocks; search
READ_SUPERVISOR = "read:dashboard:supervisor"
READ_PRODUCT = "read:dashboard:product"
READ_EXECUTIVE = "read:dashboard:executive"
READ_MODELS = "read:models"  # /sla, /workload, /trends, /dimensions
EXPORT = "export"
PERSONAL_DATA = "personal_data"  # customers' names and contacts unmasked
ACCESS_LOG = "read:access_log"  # who viewed whose personal data
READ_ALERTS = "read:alerts"  # /alerts (team-bound roles: their team's)
BACKDATE = "backdate"  # state `occurred_at` (imports of past events)
# Subscriptions: where notifications go (webhooks, e-mail, chat robots) and their deliveries.
MANAGE_SUBSCRIPTIONS = "manage_subscriptions"  # create, change, pause, resume, rotate, disable
READ_DELIVERIES = "read:deliveries"  # /subscriptions, /deliveries
RESEND_DELIVERY = "resend_delivery"
# Erasure of a customer's personal data (crypto-shredding), with a stated legal basis.
ERASE_PERSONAL_DATA = "erase_personal_data"
READS = frozenset({READ_COMPLAINT, READ_AUDIT, READ_SUPERVISOR, READ_PRODUCT, READ_EXECUTIVE,
                   READ_MODELS, EXPORT, PERSONAL_DATA, ACCESS_LOG, READ_ALERTS})
ALERTING = frozenset({ACKNOWLEDGE_ALERT, RESOLVE_ALERT, READ_ALERTS})
NOTIFYING = frozenset({MANAGE_SUBSCRIPTIONS, READ_DELIVERIES, RESEND_DELIVERY})
PERMISSIONS: tuple[str, ...] = (*sorted(COMMANDS), TAKE, RAISE_ALERT, ACKNOWLEDGE_ALERT, RESOLVE_ALERT,
                                *sorted(KNOWLEDGE), MANAGE_SUBSCRIPTIONS, RESEND_DELIVERY, ERASE_PERSONAL_DATA,
                                *sorted(READS), READ_DELIVERIES, BACKDATE)

DASHBOARDS = frozenset({READ_SUPERVISOR, READ_PRODUCT, READ_EXECUTIVE})

# The matrix: each role's permissions.
MATRIX: dict[Role, frozenset[str]] = {
    "intake": frozenset({"register", "add_note", "record_contact", "customer_replied", "withdraw",
                         "update_fields", "add_tag", READ_COMPLAINT, PERSONAL_DATA}),
    "agent": (HANDLING | {"register", TAKE}) - {"mark_duplicate"}
    | {READ_COMPLAINT, READ_AUDIT, READ_SUPERVISOR, READ_MODELS, PERSONAL_DATA, ACKNOWLEDGE_ALERT, READ_ALERTS},
    "supervisor": COMMANDS | ALERTING | KNOWLEDGE | {READ_COMPLAINT, READ_AUDIT, READ_SUPERVISOR, READ_MODELS,
                                                     EXPORT, PERSONAL_DATA},
    "department_head": COMMANDS | DASHBOARDS | ALERTING | KNOWLEDGE | {READ_COMPLAINT, READ_AUDIT, READ_MODELS,
                                                                       EXPORT, PERSONAL_DATA},
    "quality": ALERTING | KNOWLEDGE | {"add_note", "add_tag", "remove_tag", READ_COMPLAINT, READ_AUDIT, READ_PRODUCT,
                                       READ_MODELS, EXPORT},
    "executive": DASHBOARDS | {READ_MODELS, EXPORT, ACKNOWLEDGE_ALERT, READ_ALERTS},
    "auditor": READS | {READ_DELIVERIES},
    "analyst": DASHBOARDS | {READ_AUDIT, READ_MODELS, EXPORT, READ_ALERTS},
    "admin": DASHBOARDS | NOTIFYING | {READ_MODELS, READ_ALERTS, ERASE_PERSONAL_DATA},
    "automation": frozenset({"triage", "assign", "escalate", "add_note", READ_COMPLAINT, RAISE_ALERT,
                             RESOLVE_ALERT, READ_ALERTS, DRAFT_ARTICLE}),
    "importer": COMMANDS | {BACKDATE, READ_COMPLAINT},
    # The customer acts only through a signed link: the survey records their verification.
    "customer": frozenset({"verify"}),
    # The notifier disables an endpoint that keeps failing, and says so with an alert.
    "notifier": frozenset({MANAGE_SUBSCRIPTIONS, RAISE_ALERT}),
}
# Row level: these roles work only on complaints of their own team (a supervisor may also
# take a complaint no team has yet, to triage and assign it); their dashboards, read
# models and exports show their team only.
TEAM_BOUND: frozenset[Role] = frozenset({"agent", "supervisor"})
TAKES_UNASSIGNED: frozenset[Role] = frozenset({"supervisor"})

MASK = "[masked]"


def masked(value: object) -> object:
    """`value` with the contents of every personal field group (`customer_personal`)
    replaced by the mask, however deep it sits (states, histories, their changes)."""
    if isinstance(value, dict):
        return {k: _mask_all(v) if k == "customer_personal" else masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v) for v in value]
    return value


def _mask_all(value: object) -> object:
    if isinstance(value, dict):
        return {k: _mask_all(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_all(v) for v in value]
    return None if value is None else MASK


class AccessDenied(Exception):
    """The principal may not do this (HTTP 403)."""


@dataclass(frozen=True)
class Principal:
    """Who acts: a verified token's subject, display name, roles and team."""

    subject: str
    name: str
    roles: frozenset[str]
    team: str | None = None
    permissions: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        granted = frozenset().union(*(MATRIX.get(role, frozenset()) for role in self.roles))  # type: ignore[call-overload]
        object.__setattr__(self, "permissions", granted)

    @property
    def team_bound(self) -> bool:
        """Whether this principal sees and acts on its own team only (a role without the
        row-level rule, held as well, lifts it)."""
        return bool(self.roles) and self.roles <= TEAM_BOUND

    def may(self, permission: str) -> bool:
        return permission in self.permissions

    def require(self, permission: str) -> None:
        if permission not in self.permissions:
            roles = ", ".join(sorted(self.roles)) or "none"
            raise AccessDenied(f"{self.subject} (roles: {roles}) may not {permission.replace('_', ' ')}")

    def permission_for(self, action: str, team: str | None = None, agent: str | None = None) -> str:
        """The permission `action` needs from this principal: an assignment to itself within
        its own team needs only `take` when it may take (an agent picking up work), every
        other action the permission named as the action."""
        if action == "assign" and TAKE in self.permissions and "assign" not in self.permissions \
                and agent == self.subject and team is not None and team == self.team:
            return TAKE
        return action

    def may_work_on(self, team: str | None) -> bool:
        """Whether the row-level rule lets this principal act on a complaint of `team`."""
        if not self.team_bound:
            return True
        if team is None:
            return bool(self.roles & TAKES_UNASSIGNED)
        return team == self.team

    def require_team(self, team: str | None) -> None:
        if not self.may_work_on(team):
            whose = "no team's yet" if team is None else f"team {team}'s"
            raise AccessDenied(f"{self.subject} works on team {self.team or '(none)'}'s complaints only;"
                               f" this one is {whose}")

    def acted_as(self) -> dict[str, object]:
        """What an event records of the principal besides its subject."""
        return {"name": self.name, "roles": sorted(self.roles)}


def matrix_markdown() -> str:
    """The matrix as the Markdown table of `docs/security.md`."""
    head = "| permission | " + " | ".join(ROLES) + " |"
    rule = "|---|" + "---|" * len(ROLES)
    rows = [f"| `{p}` | " + " | ".join("✓" if p in MATRIX[r] else "" for r in ROLES) + " |"
            for p in PERMISSIONS]
    names = [f"- `{role}`: {en} ({zh})" + (" — row level: own team only" if role in TEAM_BOUND else "")
             for role, (en, zh) in ROLE_NAMES.items()]
    return "\n".join(["## Roles", "", *names, "", "## Permissions", "", head, rule, *rows, ""])
