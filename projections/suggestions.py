"""The suggestions index: published knowledge articles ranked by BM25 for a complaint's text.

Scoring is `bm25s`'s (Lucene's BM25 over sparse matrices); this module only says what a
term is. Text is read as NFKC (full-width letters and digits as ASCII) and lower-cased;
runs of Chinese characters are segmented by `jieba` in its search mode (the words and the
shorter words inside them: 电动车电池 gives 电动, 动车, 电动车 and 电池), runs of Latin letters and
digits are words, stemmed by the Snowball English stemmer (PyStemmer: refunds, refunded ->
refund). Stop words of both languages (bm25s's lists) are left out.

An index is built once over a set of documents and never changed: a new set of
published articles makes a new index (`projections.knowledge_articles` does, from the
event store), and readers keep using the one they took until then.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import bm25s
import jieba
import numpy as np
import Stemmer
from bm25s.stopwords import STOPWORDS_CHINESE, STOPWORDS_EN

jieba.setLogLevel(logging.WARNING)  # its dictionary's loading is not news
# CJK ideographs (with extension A and the compatibility block) are one kind of run; ASCII
# letters and digits the other; everything else separates terms.
_RUNS = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+|[a-z0-9]+")
_STOP = frozenset(STOPWORDS_EN) | frozenset(STOPWORDS_CHINESE)
_STEMMER = Stemmer.Stemmer("english")


def terms(text: str) -> list[str]:
    """The terms BM25 counts in `text` (Chinese and English alike, mixed or not)."""
    found: list[str] = []
    for run in _RUNS.findall(unicodedata.normalize("NFKC", text).lower()):
        if run[0].isascii():
            if run not in _STOP:
                found.append(run)
        else:
            found += [word for word in jieba.lcut_for_search(run) if word not in _STOP]
    return [term if not term[0].isascii() else _STEMMER.stemWord(term) for term in found]


@dataclass(frozen=True)
class Document:
    """One published article as the index holds it: its id, where it came from, what is shown."""

    article_id: str
    complaint_id: str
    title: str
    resolution: str
    product: str | None
    category: str | None
    version: int


class SuggestionIndex:
    """BM25 over the documents' terms (the caller gives each document's terms: an article's
    title, description and resolution), queried with a complaint's text."""

    def __init__(self, documents: Sequence[Document], document_terms: Sequence[list[str]]) -> None:
        self.documents = list(documents)
        self._rows = {doc.complaint_id: [] for doc in self.documents}  # complaint -> its articles' rows
        for row, doc in enumerate(self.documents):
            self._rows[doc.complaint_id].append(row)
        self._bm25: Any = None
        # Every query carries a mask (all ones but the excluded rows), so only one variant
        # of the compiled scoring is ever made.
        self._everything = np.ones(len(self.documents), dtype=np.float32)
        if self.documents:
            # bm25s's numba backend: the scoring and top-k compiled (a Chinese query's common
            # words touch tens of thousands of documents: at 100,000 articles numpy's backend
            # took some 17 ms a query, numba's under 1), compiled once per process, here, on
            # the builder's thread, never in a request.
            self._bm25 = bm25s.BM25(backend="numba")
            self._bm25.index(list(document_terms), show_progress=False)
            self._retrieve(document_terms[0] or [""], 1, self._everything)

    def __len__(self) -> int:
        return len(self.documents)

    def suggest(self, text: str, k: int = 5, exclude_complaint: str | None = None) -> list[tuple[Document, float]]:
        """The `k` best documents for `text` with their scores, best first; only documents
        sharing a term with it, and none drafted from `exclude_complaint` (the complaint
        asking: its own solution is no suggestion)."""
        query = terms(text)
        if self._bm25 is None or not query:
            return []
        excluded = self._rows.get(exclude_complaint or "", [])
        mask = self._everything
        if excluded:
            mask = mask.copy()
            mask[excluded] = 0
        rows, scores = self._retrieve(query, min(k, len(self.documents)), mask)
        return [(self.documents[int(row)], float(score)) for row, score in zip(rows, scores) if score > 0]

    def _retrieve(self, query: list[str], k: int, mask: np.ndarray) -> tuple[Any, Any]:
        found = self._bm25.retrieve([query], k=k, show_progress=False, weight_mask=mask, n_threads=1)
        return found.documents[0], found.scores[0]
