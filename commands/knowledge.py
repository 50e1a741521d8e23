"""Knowledge article commands and their routes: draft from a complaint, edit, publish, retire.

Validated by pydantic before anything runs, like every command; `KnowledgeDesk` loads,
checks (the permission matrix, the row-level rule on the complaint drafted from), calls
and saves through the complaint desk's own path for alerts and subscriptions
(`ComplaintDesk._act_on`), so idempotency by `command_id`, `expected_version` and the
metrics work the same. A draft takes the complaint's title, description and resolution as
the write side holds them (at the version given: the automation drafts the complaint as it
was verified); the article masks the personal data in them (`aggregates.knowledge`).

`include_knowledge(app, desk, authenticate, responses)` adds the routes and their errors
to the command API: 404 for an unknown article, 409 for a transition its status does not
allow (publishing a retired article, retiring it twice, drafting from a complaint without
a resolution). Articles are read on the read side (`read_api.suggestions`).

(No `from __future__ import annotations` here: FastAPI must see the real command classes
in the endpoint signatures made below.)
"""

from collections.abc import Callable
from typing import Annotated, Any, ClassVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError
from fastapi import Depends, FastAPI, Request, status
from fastapi.responses import JSONResponse
from pydantic import Field, model_validator

from aggregates.access import DRAFT_ARTICLE, EDIT_ARTICLE, PUBLISH_ARTICLE, RETIRE_ARTICLE, Principal
from aggregates.complaint import Meta
from aggregates.knowledge import ArticleStatus, ArticleTransition, KnowledgeArticle, article_id_for
from commands.desk import ComplaintDesk, _measured
from commands.models import Command, Schema, Text, Version


class ArticleNotFound(Exception):
    def __init__(self, article_id: UUID) -> None:
        super().__init__(f"no knowledge article with id {article_id}")
        self.article_id = article_id


class DraftArticle(Command):
    """Draft an article from a resolved complaint (the automation does, once it is rated well)."""

    action: ClassVar[str] = DRAFT_ARTICLE
    complaint_id: UUID
    complaint_version: Version | None = Field(
        None, description="draft the complaint as it was at this version (default: as it stands)")


class ArticleCommand(Command):
    """A command on an existing article."""

    def carry_out(self, article: KnowledgeArticle, meta: Meta) -> None:
        raise NotImplementedError


class EditArticle(ArticleCommand):
    """Change an article's title, description or resolution (a draft's, or a published one's)."""

    action: ClassVar[str] = EDIT_ARTICLE
    title: Text | None = None
    description: Text | None = None
    resolution: Text | None = None

    @model_validator(mode="after")
    def _something(self) -> "EditArticle":
        if self.changes() == {}:
            raise ValueError("give at least one of title, description, resolution")
        return self

    def changes(self) -> dict[str, str]:
        return {key: value for key in ("title", "description", "resolution")
                if (value := getattr(self, key)) is not None}

    def carry_out(self, article: KnowledgeArticle, meta: Meta) -> None:
        article.edit(self.changes(), meta)


class PublishArticle(ArticleCommand):
    """Publish a draft: from now on it is suggested on similar complaints."""

    action: ClassVar[str] = PUBLISH_ARTICLE

    def carry_out(self, article: KnowledgeArticle, meta: Meta) -> None:
        article.publish(meta)


class RetireArticle(ArticleCommand):
    """Retire an article (a draft not worth publishing, or a solution that no longer holds)."""

    action: ClassVar[str] = RETIRE_ARTICLE
    reason: Text

    def carry_out(self, article: KnowledgeArticle, meta: Meta) -> None:
        article.retire(self.reason, meta)


# The commands on an existing article, by the path segment that names them over HTTP.
ARTICLE_COMMANDS: dict[str, type[ArticleCommand]] = {
    "edit": EditArticle, "publish": PublishArticle, "retire": RetireArticle}


class ArticleResult(Schema):
    article_id: UUID
    version: int = Field(description="the article's version after the command")
    status: ArticleStatus
    command_id: str
    replayed: bool = Field(False, description="true when this command id was seen before: nothing new was written")


class KnowledgeDesk:
    """The desk's knowledge articles: drafts, commands on them, and reading one."""

    def __init__(self, desk: ComplaintDesk) -> None:
        self.desk = desk

    def draft(self, command: DraftArticle, principal: Principal) -> ArticleResult:
        return _measured(command.action, lambda: self._draft(command, principal))

    def _draft(self, command: DraftArticle, principal: Principal) -> ArticleResult:
        principal.require(command.action)
        meta = self.desk._meta(command, principal)
        complaint = self.desk.get_complaint(command.complaint_id, command.complaint_version)
        principal.require_team(complaint.team)
        article = KnowledgeArticle.draft(complaint, meta)
        try:
            self.desk.save(article)
        except IntegrityError:
            # Drafted before under this command id: the same command again is answered as
            # the first time (another body under the same id is a 409).
            current = self.get_article(article_id_for(meta.command_id))
            current.previous_result(meta.command_id, command.action, meta.fingerprint)
            return _article_result(current, meta.command_id, replayed=True)
        return _article_result(article, meta.command_id)

    def act_on(self, article_id: UUID, command: ArticleCommand, principal: Principal) -> ArticleResult:
        return _measured(command.action, lambda: self.desk._act_on(
            article_id, command, principal, self.get_article, _article_result, command.carry_out))

    def get_article(self, article_id: UUID, version: int | None = None, *,
                    for_update: bool = False) -> KnowledgeArticle:
        try:
            article = self.desk.repository.get(article_id, version=version, deepcopy_from_cache=not for_update)
        except AggregateNotFoundError:
            raise ArticleNotFound(article_id) from None
        if not isinstance(article, KnowledgeArticle):
            raise ArticleNotFound(article_id)
        return article


def _article_result(article: KnowledgeArticle, command_id: str, replayed: bool = False) -> ArticleResult:
    done: dict[str, Any] = article.commands[command_id]
    return ArticleResult(article_id=article.id, version=done["version"], status=done["status"],
                         command_id=command_id, replayed=replayed)


def include_knowledge(app: FastAPI, desk: ComplaintDesk, authenticate: Callable[..., Principal],
                      responses: dict[int | str, Any]) -> None:
    """The article routes and their errors, on the command API `app` (`authenticate`: the
    request's principal; `responses`: the errors a command route documents)."""
    knowledge = KnowledgeDesk(desk)
    Actor = Annotated[Principal, Depends(authenticate)]

    @app.post("/knowledge/articles", status_code=status.HTTP_201_CREATED, response_model=ArticleResult,
              responses=responses, tags=["knowledge"], summary="Draft a knowledge article from a resolved complaint")
    async def draft_article(command: DraftArticle, actor: Actor) -> ArticleResult:
        return knowledge.draft(command, actor)

    for path, command_class in ARTICLE_COMMANDS.items():
        app.post(f"/knowledge/articles/{{article_id}}/{path}", response_model=ArticleResult, responses=responses,
                 tags=["knowledge"], summary=(command_class.__doc__ or command_class.__name__).strip().splitlines()[0],
                 name=command_class.action)(_endpoint_for(knowledge, command_class, Actor))

    @app.exception_handler(ArticleNotFound)
    def article_not_found(request: Request, error: ArticleNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(error), "type": "article_not_found", "article_id": str(error.article_id)},
                            status_code=404)

    @app.exception_handler(ArticleTransition)
    def article_transition(request: Request, error: ArticleTransition) -> JSONResponse:
        return JSONResponse({"detail": str(error), "type": "article_transition", "status": error.status},
                            status_code=409)


def _endpoint_for(knowledge: KnowledgeDesk, command_class: type[ArticleCommand], actor_type: Any) -> Any:
    async def endpoint(article_id: UUID, command: command_class,  # type: ignore[valid-type]
                       actor: actor_type) -> ArticleResult:  # type: ignore[valid-type]
        return knowledge.act_on(article_id, command, actor)

    endpoint.__name__ = command_class.action
    return endpoint
