"""The knowledge articles as the read side knows them, and the suggestions index over them.

Article events stay in the event store (they are not published on the topic:
`aggregates.knowledge`), so this read model follows the store itself, by topic, from the
position it last read, as the notifier follows subscriptions: each article is folded
from its events by the aggregate's own code (`event.mutate`), so the read side never
disagrees with the desk on what an article says or whether it is published. Whenever the
published articles change (a publication, an edit of a published one, a retirement), a
new BM25 index (`projections.suggestions`) is built in this follower's thread and swapped
in; requests keep answering from the previous one meanwhile. An article's terms are kept
between builds, so a build segments only the texts that changed.

Held in memory, rebuilt from the store on start (docs/knowledge.md: how long for how many
articles). The recorder and mapper are the event store's, given by the composition root.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any
from uuid import UUID

from aggregates.knowledge import ARTICLE_TOPICS, TEXTS, KnowledgeArticle
from projections.suggestions import Document, SuggestionIndex, terms

log = logging.getLogger(__name__)


class KnowledgeArticles:
    """Every article, and `index`: the suggestions index over the published ones."""

    def __init__(self, recorder: Any, mapper: Any, *, poll_interval: float = 0.5, page: int = 5_000) -> None:
        self.recorder = recorder
        self.mapper = mapper
        self.poll_interval = poll_interval
        self.page = page
        self.position = 0  # the last store position read
        self.index = SuggestionIndex([], [])
        self.caught_up = threading.Event()
        self._articles: dict[UUID, KnowledgeArticle] = {}
        self._terms: dict[UUID, tuple[tuple[str, ...], list[str]]] = {}  # texts -> their terms
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ following the store
    def refresh(self) -> int:
        """Read the article events the store has since the last call and, if the published
        articles changed, build their index anew. Returns the events read."""
        read, published_changed = 0, False
        # Every event up to the store's last id has committed (writes take turns): once the
        # article events up to it are read, the next read starts after it, not after the
        # last article event, so it never scans the complaints' events twice.
        top = self.recorder.max_notification_id() or 0
        while True:
            notes = self.recorder.select_notifications(self.position + 1, self.page, stop=top, topics=ARTICLE_TOPICS)
            if not notes:
                self.position = max(self.position, top)
                break
            with self._lock:
                for note in notes:
                    event = self.mapper.to_domain_event(note)
                    # The store's own members, where a mapper without the chain key leaves them.
                    vars(event).pop("chain", None)
                    before = self._articles.get(note.originator_id)
                    was_published = before is not None and before.status == "published"
                    article = event.mutate(before)
                    self._articles[note.originator_id] = article
                    published_changed |= was_published or article.status == "published"
            self.position = notes[-1].id
            read += len(notes)
            if len(notes) < self.page:
                self.position = max(self.position, top)
                break
        if published_changed:
            self._rebuild()
        self.caught_up.set()
        return read

    def _rebuild(self) -> None:
        started = time.perf_counter()
        with self._lock:
            published = [a for a in self._articles.values() if a.status == "published"]
        documents, document_terms = [], []
        for article in published:
            texts = tuple(getattr(article, name) for name in TEXTS)
            cached = self._terms.get(article.id)
            if cached is None or cached[0] != texts:
                cached = (texts, terms(" ".join(texts)))
                self._terms[article.id] = cached
            documents.append(Document(str(article.id), str(article.complaint_id), article.title, article.resolution,
                                      article.product, article.category, article.version))
            document_terms.append(cached[1])
        self.index = SuggestionIndex(documents, document_terms)
        log.info("suggestions index: %d published articles (built in %.2f s)", len(documents),
                 time.perf_counter() - started)

    # ------------------------------------------------------------------ reading
    def articles(self, status: str | None = None) -> list[dict[str, Any]]:
        """The articles (of `status`), most recently changed first."""
        with self._lock:
            chosen = [a.state() for a in self._articles.values() if status is None or a.status == status]
        return sorted(chosen, key=lambda state: state["updated_at"], reverse=True)

    def article(self, article_id: UUID) -> dict[str, Any] | None:
        with self._lock:
            found = self._articles.get(article_id)
            return found.state() if found is not None else None

    # ------------------------------------------------------------------ running
    def run(self) -> None:
        """Follow the store until stopped; a failing read (the store away) is tried again."""
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception as error:
                log.error("knowledge articles: reading the event store failed, trying again: %s: %s",
                          type(error).__name__, error)
            self._stop.wait(self.poll_interval)

    def start_background(self) -> threading.Thread:
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="knowledge-articles", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
