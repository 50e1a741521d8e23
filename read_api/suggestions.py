"""Knowledge suggestions for a complaint, and the articles as the read side knows them.

`GET /complaints/{id}/suggestions` ranks the published articles by BM25 against the
complaint's title and description as the read node holds them (masked free text, as
on the stream), leaving out the articles drafted from this very complaint; whoever may
read the complaint may ask (a team-bound role: its team's complaints only).
`GET /knowledge/articles` lists the articles, drafts first to review. Both answer from
memory (`projections.knowledge_articles`), the complaint's text from the read node.

(No `from __future__ import annotations`: FastAPI must see the real types.)
"""

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import duckdb
from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel, Field

from aggregates.access import READ_COMPLAINT, AccessDenied, Principal
from aggregates.knowledge import ArticleStatus
from projections.knowledge_articles import KnowledgeArticles
from read_api import audit, figures
from read_api.app import NOT_FOUND, NOT_READY, CursorSource, refuse_unknown_parameters
from read_api.schemas import Problem


class Suggestion(BaseModel):
    article_id: UUID
    title: str
    resolution: str
    product: str | None
    category: str | None
    drafted_from: UUID = Field(description="the complaint whose solution the article is")
    score: float = Field(description="BM25 score against the complaint's title and description (higher: closer)")


class Suggestions(BaseModel):
    complaint_id: UUID
    items: list[Suggestion] = Field(description="best first; only articles sharing a term with the complaint")
    published_articles: int = Field(description="how many published articles were ranked")


class ArticleRow(BaseModel):
    id: UUID
    version: int
    complaint_id: UUID
    title: str
    description: str
    resolution: str
    product: str | None
    category: str | None
    csat: int | None
    status: ArticleStatus
    drafted_at: datetime
    drafted_by: str
    published_at: datetime | None
    published_by: str | None
    retired_reason: str | None
    updated_at: datetime


class ArticleList(BaseModel):
    items: list[ArticleRow]
    total: int
    limit: int
    offset: int


def suggestions_router(get_db: Callable[[], CursorSource], articles: KnowledgeArticles,
                       authenticate: Callable[..., Any]) -> APIRouter:
    """The knowledge routes over the read node `get_db()` and the articles the store holds."""
    router = APIRouter(responses={401: {"model": Problem, "description": "no valid bearer token"},
                                  403: {"model": Problem, "description": "not allowed for the role or team"}},
                       dependencies=[Depends(refuse_unknown_parameters())], tags=["knowledge"])

    async def reader(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        try:
            principal.require(READ_COMPLAINT)
        except AccessDenied as error:
            raise HTTPException(403, str(error)) from None
        return principal

    Reader = Annotated[Principal, Depends(reader)]

    @router.get("/complaints/{complaint_id}/suggestions", response_model=Suggestions,
                responses=NOT_FOUND | NOT_READY,
                summary="Published knowledge articles for this complaint, best first (BM25)")
    def suggestions(complaint_id: Annotated[UUID, Path(description="the complaint's id")], principal: Reader,
                    limit: Annotated[int, Query(ge=1, le=20, description="articles at most")] = 3) -> dict[str, Any]:
        text = _complaint_text(get_db, complaint_id, principal)
        index = articles.index  # the one taken now answers, whatever is built meanwhile
        found = index.suggest(text, limit, exclude_complaint=str(complaint_id))
        return {"complaint_id": complaint_id, "published_articles": len(index), "items": [
            {"article_id": doc.article_id, "title": doc.title, "resolution": doc.resolution, "product": doc.product,
             "category": doc.category, "drafted_from": doc.complaint_id, "score": score} for doc, score in found]}

    @router.get("/knowledge/articles", response_model=ArticleList,
                summary="The knowledge articles, most recently changed first (drafts: to review and publish)")
    def article_list(principal: Reader, status: Literal["draft", "published", "retired"] | None = None,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 50,
                     offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> dict[str, Any]:
        chosen = articles.articles(status)
        return {"items": chosen[offset:offset + limit], "total": len(chosen), "limit": limit, "offset": offset}

    @router.get("/knowledge/articles/{article_id}", response_model=ArticleRow,
                responses={404: {"model": Problem, "description": "no such article"}},
                summary="A knowledge article as it stands")
    def article(article_id: Annotated[UUID, Path(description="the article's id")], principal: Reader) -> dict[str, Any]:
        found = articles.article(article_id)
        if found is None:
            raise HTTPException(404, f"no knowledge article with id {article_id}")
        return found

    return router


def _complaint_text(get_db: Callable[[], CursorSource], complaint_id: UUID, principal: Principal) -> str:
    """The complaint's title and description as registered (404: not in the read model;
    403: another team's, for a team-bound principal)."""
    try:
        db: duckdb.DuckDBPyConnection = get_db().cursor()
    except Exception as error:  # the read node is starting or gone
        raise HTTPException(503, f"the read database is not available: {error}") from error
    try:
        if not figures.has_table(db, "events"):
            raise HTTPException(503, "the read node has no events table yet")
        row = db.execute("SELECT json_extract_string(payload, '$.title'), json_extract_string(payload, '$.description')"
                         " FROM events WHERE complaint_id = ? AND event_type = 'Registered' LIMIT 1",
                         [str(complaint_id)]).fetchone()
        if row is None:
            raise HTTPException(404, f"no complaint with id {complaint_id} in the read model")
        if principal.team_bound:
            try:
                principal.require_team(audit.team_of(db, complaint_id))
            except AccessDenied as error:
                raise HTTPException(403, str(error)) from None
    finally:
        db.close()
    return f"{row[0] or ''} {row[1] or ''}"
