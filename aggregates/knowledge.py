"""The KnowledgeArticle aggregate: a solution worth suggesting the next time.

Pure domain code, no I/O. When a complaint is verified with a good rating (CSAT 4 or 5),
the automation drafts an article from it (its title, description and resolution); people
in quality and the team leads edit it, publish it (then it is suggested on similar
complaints: `GET /complaints/{id}/suggestions`) and retire it when it no longer holds.

    draft --publish--> published --retire--> retired
      \\______________retire_______________/^
    edit: a draft or a published article (a published one stays published)

An article is read by everyone who handles complaints, so its text never carries personal
data: what it is given is masked (`aggregates.personal_text`), as the complaint's free
text is on the stream. Its events stay in the event store, like a subscription's: they
are the desk's configuration, not a complaint's history, and are not published on the
topic (the suggestions index reads them from the store: docs/knowledge.md).

An article's id derives from the command that drafted it, and the automation derives that
command id from the `Verified` event, so a redelivered event or a restarted automation
drafts nothing twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from aggregates.complaint import Complaint, DomainError, Meta, previous_result
from aggregates.personal_text import mask_personal

ArticleStatus = Literal["draft", "published", "retired"]
# The texts of an article, each searched by the suggestions (BM25 over all three).
TEXTS = ("title", "description", "resolution")

KNOWLEDGE_NAMESPACE = UUID("8a3f61d2-4c0b-4e9a-9b57-1d2e6f7a8c43")
# Its events' stored topics begin with this (the suggestions index reads them by topic).
ARTICLE_TOPIC_PREFIX = "aggregates.knowledge:KnowledgeArticle."
EVENT_TYPES = ("ArticleDrafted", "ArticleEdited", "ArticlePublished", "ArticleRetired")
ARTICLE_TOPICS = [ARTICLE_TOPIC_PREFIX + name for name in EVENT_TYPES]


class ArticleTransition(DomainError):
    """An article command its status does not allow, or a draft from a complaint without a
    resolution (HTTP 409)."""

    def __init__(self, status: str, action: str, what: str = "an article") -> None:
        super().__init__(f"cannot {action} {what} that is {status}")
        self.status = status


def article_id_for(command_id: str) -> UUID:
    """The id of the article the command `command_id` drafts."""
    return uuid5(KNOWLEDGE_NAMESPACE, command_id)


class KnowledgeArticle(Aggregate):
    @staticmethod
    def create_id(command_id: str) -> UUID:  # type: ignore[override]
        return article_id_for(command_id)

    @event("ArticleDrafted")
    def __init__(
        self,
        complaint_id: UUID,
        title: str,
        description: str,
        resolution: str,
        product: str | None,
        category: str | None,
        csat: int | None,
        actor: str,
        occurred_at: datetime,
        command_id: str,
        correlation_id: str,
        acted_as: dict[str, Any] | None = None,
        fingerprint: str | None = None,
    ) -> None:
        self.complaint_id = complaint_id
        self.title, self.description, self.resolution = title, description, resolution
        self.product = product
        self.category = category
        self.csat = csat
        self.status: ArticleStatus = "draft"
        self.drafted_at = occurred_at
        self.drafted_by = actor
        self.published_at: datetime | None = None
        self.published_by: str | None = None
        self.retired_reason: str | None = None
        self.commands: dict[str, dict[str, Any]] = {}
        self._applied("draft_article", actor, occurred_at, command_id, fingerprint)

    @classmethod
    def draft(cls, complaint: Complaint, meta: Meta) -> KnowledgeArticle:
        """A draft of the complaint's solution, its texts masked before they are recorded."""
        resolution = complaint.resolution
        if not resolution:
            raise ArticleTransition(complaint.status, "draft an article from", "a complaint (it has no resolution)")
        verification = complaint.verification or {}
        return cls(complaint_id=complaint.id, title=mask_personal(complaint.title),
                   description=mask_personal(complaint.description), resolution=mask_personal(resolution),
                   product=complaint.product, category=complaint.category,
                   csat=verification.get("csat"), **meta.fields())

    def _applied(self, action: str, actor: str, occurred_at: datetime, command_id: str,
                 fingerprint: str | None) -> None:
        version = 1 if action == "draft_article" else self.version + 1
        self.commands[command_id] = {"action": action, "version": version, "status": self.status,
                                     "actor": actor, "fingerprint": fingerprint}
        self.updated_at = occurred_at

    def previous_result(self, command_id: str, action: str, fingerprint: str | None = None) -> int | None:
        """The version a command already produced, or None if it is new here."""
        return previous_result(self.commands, command_id, action, fingerprint)

    # ---------------------------------------------------------------- editing
    def edit(self, changes: dict[str, str], meta: Meta) -> None:
        """Change some of the texts; an edit that changes nothing records nothing."""
        if self.status == "retired":
            raise ArticleTransition(self.status, "edit")
        after = {key: mask_personal(value) for key, value in changes.items()}
        before = {key: getattr(self, key) for key in after}
        if before != after:
            self._edited(before=before, after=after, **meta.fields())

    @event("ArticleEdited")
    def _edited(self, before: dict[str, str], after: dict[str, str], actor: str, occurred_at: datetime,
                command_id: str, correlation_id: str, acted_as: dict[str, Any] | None = None,
                fingerprint: str | None = None) -> None:
        for key, value in after.items():
            setattr(self, key, value)
        self._applied("edit_article", actor, occurred_at, command_id, fingerprint)

    # ---------------------------------------------------------------- publishing
    def publish(self, meta: Meta) -> None:
        if self.status != "draft":
            raise ArticleTransition(self.status, "publish")
        self._published(**meta.fields())

    @event("ArticlePublished")
    def _published(self, actor: str, occurred_at: datetime, command_id: str, correlation_id: str,
                   acted_as: dict[str, Any] | None = None, fingerprint: str | None = None) -> None:
        self.status = "published"
        self.published_at, self.published_by = occurred_at, actor
        self._applied("publish_article", actor, occurred_at, command_id, fingerprint)

    def retire(self, reason: str, meta: Meta) -> None:
        if self.status == "retired":
            raise ArticleTransition(self.status, "retire")
        self._retired(reason=reason, **meta.fields())

    @event("ArticleRetired")
    def _retired(self, reason: str, actor: str, occurred_at: datetime, command_id: str, correlation_id: str,
                 acted_as: dict[str, Any] | None = None, fingerprint: str | None = None) -> None:
        self.status, self.retired_reason = "retired", reason
        self._applied("retire_article", actor, occurred_at, command_id, fingerprint)

    def state(self) -> dict[str, Any]:
        return {
            key: value for key, value in vars(self).items()
            if not key.startswith("_") and key not in {"pending_events", "commands"}
        } | {"id": self.id, "version": self.version}
