"""Knowledge suggestions (issue 15): latency at 100,000 published articles, precision on CFPB.

    python -m bench.knowledge --help
    python -m bench.knowledge                         # both, ~3-4 minutes
    python -m bench.knowledge --only latency --articles 100000
    python -m bench.knowledge --only precision

- latency: `--articles` articles drafted and published (built as aggregates and saved a
  thousand to a transaction in a SQLite event store of their own, two events each), half
  Chinese and half English: their words drawn by frequency from jieba's dictionary and
  from a Zipf-distributed English vocabulary of 20,000 words, 30-80 words an article.
  Then the read side's start-up: `KnowledgeArticles.refresh()` reads the store's article
  events, folds them, segments every text and builds the index (timed). Then
  `--queries` suggestions for complaints drawn the same way (half Chinese, half English)
  through the route, `GET /complaints/{id}/suggestions?limit=3` (TestClient; the
  complaint's text from a DuckDB `events` table; a fixed principal, no token), one at a
  time: p50, p99 and max; and the index's own `suggest` alone.
- precision: the CFPB samples (`--cfpb`, default ../shared/data/cfpb/; skipped when
  absent). Every row with a narrative and a company response; `--holdout` of them (seeded)
  are the new complaints, the rest become published articles: title the Sub-product (else
  the Product), description the narrative, resolution the company's response and public
  response. The Issue column, the label, is in no text: the importer makes it the title
  and the category, so a query with it would find its own Issue by name. A held-out
  complaint asks with its narrative (what a new complaint says before anyone triages it);
  precision@3 is the share whose top 3 holds an article of the same Issue (the issue's
  definition), beside the mean share of the top 3 that is of the same Issue and the
  baseline of always suggesting the most common Issue's articles.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from itertools import accumulate
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

ROOT = Path(__file__).resolve().parent.parent
CFPB = ROOT.parent / "shared" / "data" / "cfpb"


# ---------------------------------------------------------------------------- texts
class Words:
    """Random texts: Chinese words by their frequency in jieba's dictionary, English words
    from a Zipf-distributed made-up vocabulary."""

    def __init__(self, seed: int) -> None:
        import jieba

        self.random = random.Random(seed)
        dictionary = Path(jieba.__file__).with_name("dict.txt")
        entries = [line.split() for line in dictionary.read_text(encoding="utf-8").splitlines()[:400_000]]
        chinese = sorted(((w, int(f)) for w, f, *_ in entries
                          if len(w) >= 2 and all("\u4e00" <= c <= "\u9fff" for c in w)), key=lambda e: -e[1])[:30_000]
        # Cumulative weights, made once: random.choices would add the weights up on every call.
        self.chinese, self.chinese_weights = [w for w, _ in chinese], list(accumulate(f for _, f in chinese))
        letters = "abcdefghijklmnopqrstuvwxyz"
        self.english = ["".join(self.random.choice(letters) for _ in range(self.random.randint(3, 9)))
                        for _ in range(20_000)]
        self.english_weights = list(accumulate(1 / (rank + 1) for rank in range(len(self.english))))

    def text(self, chinese: bool, count: int) -> str:
        if chinese:
            return "".join(self.random.choices(self.chinese, cum_weights=self.chinese_weights, k=count))
        return " ".join(self.random.choices(self.english, cum_weights=self.english_weights, k=count))


# ---------------------------------------------------------------------------- latency
def latency(articles: int, queries: int, seed: int) -> dict[str, Any]:
    import duckdb
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from aggregates.access import Principal
    from aggregates.complaint import Meta
    from aggregates.knowledge import KnowledgeArticle
    from complaints.settings import Settings
    from complaints.store import open_desk
    from projections.knowledge_articles import KnowledgeArticles
    from read_api.suggestions import suggestions_router

    words = Words(seed)
    with tempfile.TemporaryDirectory(prefix="bench-knowledge-") as tmp:
        desk = open_desk(Settings(store="sqlite", sqlite_path=Path(tmp) / "events.sqlite"))
        now = datetime.now(UTC)
        started = time.perf_counter()
        for first in range(0, articles, 1_000):
            chunk = []
            for i in range(first, min(first + 1_000, articles)):
                chinese = i % 2 == 0
                meta = Meta("bench", now, f"draft-{i}", f"draft-{i}")
                article = KnowledgeArticle(
                    complaint_id=uuid4(), title=words.text(chinese, 5), description=words.text(chinese, 40),
                    resolution=words.text(chinese, 20), product=f"product-{i % 50}", category=None, csat=5,
                    **meta.fields())
                article.publish(Meta("bench", now, f"publish-{i}", f"draft-{i}"))
                chunk.append(article)
            desk.save(*chunk)
        stored = time.perf_counter() - started
        followed = KnowledgeArticles(desk.recorder, desk.mapper)
        started = time.perf_counter()
        followed.refresh()
        built = time.perf_counter() - started
        assert len(followed.index) == articles, len(followed.index)

        db = duckdb.connect()
        db.execute("CREATE TABLE events (complaint_id VARCHAR, event_type VARCHAR, payload VARCHAR)")
        asked = []
        for q in range(queries):
            chinese = q % 2 == 0
            complaint_id = str(uuid4())
            asked.append(complaint_id)
            db.execute("INSERT INTO events VALUES (?, 'Registered', ?)", [complaint_id, json.dumps(
                {"title": words.text(chinese, 5), "description": words.text(chinese, 30)}, ensure_ascii=False)])
        principal = Principal("bench", "bench", frozenset({"department_head"}))
        app = FastAPI()
        app.include_router(suggestions_router(lambda: db, followed, lambda: principal))
        client = TestClient(app)
        for complaint_id in asked[:20]:  # warm-up
            client.get(f"/complaints/{complaint_id}/suggestions?limit=3").raise_for_status()
        route, found = [], 0
        for complaint_id in asked:
            started = time.perf_counter()
            answer = client.get(f"/complaints/{complaint_id}/suggestions?limit=3")
            route.append(time.perf_counter() - started)
            answer.raise_for_status()
            found += bool(answer.json()["items"])
        texts = [" ".join(row) for row in db.execute("SELECT json_extract_string(payload, '$.title'),"
                                                     " json_extract_string(payload, '$.description') FROM events"
                                                     ).fetchall()]
        alone = []
        for text in texts:
            started = time.perf_counter()
            followed.index.suggest(text, 3)
            alone.append(time.perf_counter() - started)
        desk.close()
    return {"articles": articles, "stored_seconds": round(stored, 1), "index_build_seconds": round(built, 1),
            "queries": queries, "answered_with_suggestions": found,
            "route_ms": _quantiles(route), "index_ms": _quantiles(alone)}


def _quantiles(seconds: Sequence[float]) -> dict[str, float]:
    ordered = sorted(seconds)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {"p50": at(0.5), "p99": at(0.99), "max": round(ordered[-1] * 1000, 2),
            "mean": round(statistics.fmean(ordered) * 1000, 2)}


# ---------------------------------------------------------------------------- precision
def cfpb_rows(directory: Path) -> list[dict[str, str]]:
    """The samples' rows with a narrative and a company response (none: no samples here)."""
    rows = []
    for path in sorted(directory.glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as f:
            rows += [row for row in csv.DictReader(f)
                     if (row.get("Consumer complaint narrative") or "").strip()
                     and (row.get("Company response to consumer") or "").strip() not in ("", "In progress")
                     and (row.get("Issue") or "").strip()]
    return rows


def precision(rows: list[dict[str, str]], holdout: float = 0.2, seed: int = 15) -> dict[str, Any]:
    """Precision@3 of the suggestions over CFPB rows (see the module's docstring)."""
    from projections.suggestions import Document, SuggestionIndex, terms

    shuffled = rows[:]
    random.Random(seed).shuffle(shuffled)
    cut = int(len(shuffled) * holdout)
    held, published = shuffled[:cut], shuffled[cut:]
    documents, document_terms = [], []
    for i, row in enumerate(published):
        title = (row.get("Sub-product") or "").strip() or row["Product"]
        resolution = " ".join(filter(None, (row["Company response to consumer"], row.get("Company public response"))))
        documents.append(Document(str(i), row["Complaint ID"], title, resolution, row["Product"], row["Issue"], 2))
        document_terms.append(terms(" ".join((title, row["Consumer complaint narrative"], resolution))))
    started = time.perf_counter()
    index = SuggestionIndex(documents, document_terms)
    built = time.perf_counter() - started
    hits, shares = 0, 0.0
    for row in held:
        top = index.suggest(row["Consumer complaint narrative"], 3)
        same = [doc.category == row["Issue"] for doc, _ in top]
        hits += any(same)
        shares += sum(same) / 3
    common = Counter(row["Issue"] for row in published).most_common(1)[0][0]
    baseline = sum(row["Issue"] == common for row in held) / len(held)
    return {"rows": len(rows), "articles": len(published), "held_out": len(held),
            "issues": len({row["Issue"] for row in rows}), "index_build_seconds": round(built, 2),
            "precision_at_3": round(hits / len(held), 3), "mean_share_of_top_3": round(shares / len(held), 3),
            "baseline_most_common_issue": round(baseline, 3), "most_common_issue": common}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["latency", "precision"])
    parser.add_argument("--articles", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--cfpb", type=Path, default=CFPB)
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"machine": f"{platform.machine()}, Python {platform.python_version()}"}
    if args.only in (None, "precision"):
        rows = cfpb_rows(args.cfpb) if args.cfpb.is_dir() else []
        report["precision"] = precision(rows, args.holdout, args.seed) if rows else \
            f"skipped: no CFPB samples in {args.cfpb}"
    if args.only in (None, "latency"):
        report["latency"] = latency(args.articles, args.queries, args.seed)
    json.dump(report, sys.stdout, indent=2, ensure_ascii=False)
    print()


if __name__ == "__main__":
    main()
