"""The CFPB importer, and a replay of real complaints through the read models.

With the CFPB samples in ../shared/data/cfpb/ (public data of the US Consumer Financial
Protection Bureau), both files are imported as commands, the events are fed to the read
models as the consumer runner feeds them, and volumes by product and month and the timely
rate are checked against figures computed straight from the CSV with DuckDB. A CSV the
test writes itself goes through the same checks, so a clone without the data still
exercises the importer.
"""

from __future__ import annotations

import csv
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from complaints.store import open_desk
from commands.desk import ComplaintDesk
from complaints.settings import Settings
from consumers.stored_events import envelopes
from projections import queries
from projections.base import to_batch
from projections.fields import FieldsProjector
from read_api import figures
from read_api.schemas import Filters
from aggregates.complaint import complaint_id_for
from commands.cfpb import WINDOW_DAYS, import_cfpb, rows as cfpb_rows
from complaints.cli import app as cli_app
from consumers.rebuild import rebuild
from tests.test_read_models import POLICY, deliver, projectors, read_db

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cfpb"
SAMPLES = sorted(DATA.glob("cfpb_complaints_sample_*.csv")) if DATA.is_dir() else []
COLUMNS = ["Date received", "Product", "Sub-product", "Issue", "Sub-issue", "Consumer complaint narrative",
           "Company public response", "Company", "State", "ZIP code", "Tags", "Consumer consent provided?",
           "Submitted via", "Date sent to company", "Company response to consumer", "Timely response?",
           "Consumer disputed?", "Complaint ID"]


def desk_at(folder: Path) -> ComplaintDesk:
    return open_desk(Settings(store="sqlite", sqlite_path=folder / "events.sqlite"))


def models() -> list[object]:
    """The read models of tests.test_read_models, and the custom fields' (the CFPB-only facts)."""
    return [*projectors(), FieldsProjector()]


def read_models_of(desk: ComplaintDesk, batch: int = 5_000) -> duckdb.DuckDBPyConnection:
    """The read models fed in runner-sized batches from the store's notification log."""
    db = read_db(models())
    start = 1
    while page := desk.recorder.select_notifications(start, batch):
        deliver(db, to_batch(envelopes(desk.mapper, page)), models())
        start = page[-1].id + 1
    return db


def from_csv(paths: list[Path]) -> dict[str, object]:
    """The same figures, straight from the CSV files."""
    con = duckdb.connect()
    files = "[" + ", ".join(f"'{p}'" for p in paths) + "]"
    src = f"read_csv({files}, union_by_name=true, all_varchar=true)"
    day = "CAST(coalesce(try_strptime({0}, '%Y-%m-%d'), try_strptime({0}, '%m/%d/%Y')) AS DATE)"
    rows = f"""(SELECT Product AS product, {day.format('"Date received"')} AS received,
                 {day.format('coalesce("Date sent to company", "Date received")')} AS sent,
                 "Company response to consumer" AS response,
                 lower("Timely response?") IN ('yes', 'true') AS timely, Company AS company
               FROM {src} WHERE "Complaint ID" IS NOT NULL)"""
    volumes = con.execute(f"""SELECT CAST(date_trunc('month', received) AS DATE), product, count(*)
                              FROM {rows} GROUP BY ALL ORDER BY ALL""").fetchall()
    resolved, ours, cfpb, in_progress = con.execute(f"""SELECT
        count(*) FILTER (WHERE response <> 'In progress'),
        count(*) FILTER (WHERE response <> 'In progress' AND timely AND sent - received <= {WINDOW_DAYS}),
        count(*) FILTER (WHERE timely),
        count(*) FILTER (WHERE response = 'In progress') FROM {rows}""").fetchone()
    total = con.execute(f"SELECT count(*) FROM {rows}").fetchone()[0]
    by_company = dict(con.execute(f"SELECT company, count(*) FROM {rows} GROUP BY ALL").fetchall())
    # The channel as submitted, and the CFPB's own timely-response rate per company (rows
    # saying yes or no; N/A and empty ones are not counted).
    channels = dict(con.execute(f"""SELECT replace(lower("Submitted via"), ' ', '_'), count(*) FROM {src}
                                    WHERE "Complaint ID" IS NOT NULL GROUP BY ALL""").fetchall())
    timely_by_company = {company: (yes, answered) for company, yes, answered in con.execute(f"""
        SELECT Company, count(*) FILTER (WHERE lower("Timely response?") IN ('yes', 'true')),
               count(*) FILTER (WHERE lower("Timely response?") IN ('yes', 'true', 'no', 'false'))
        FROM {src} WHERE "Complaint ID" IS NOT NULL GROUP BY ALL""").fetchall() if answered}
    # Time to first assignment: receipt to "sent to company", per company and month received.
    assignment = con.execute(f"""SELECT CAST(date_trunc('month', received) AS DATE), company, count(*),
                                        quantile_cont(minutes, 0.5), quantile_cont(minutes, 0.9)
                                 FROM (SELECT received, company, CAST(greatest(sent, received) - received AS DOUBLE) * 1440 AS minutes
                                       FROM {rows}) GROUP BY ALL ORDER BY ALL""").fetchall()
    return {"assignment": assignment, "volumes": volumes, "resolved": resolved, "timely_ours": ours / resolved,
            "timely_cfpb": cfpb / total, "open": in_progress, "by_company": by_company, "channels": channels,
            "timely_by_company": timely_by_company}


def check_read_models(db: duckdb.DuckDBPyConnection, expected: dict[str, object]) -> dict[str, float]:
    volumes = queries.volume(db, "month", "product", policy=POLICY)
    assert sorted((r["period"], r["key"], r["count"]) for r in volumes) == expected["volumes"]
    met, breached = db.execute("""SELECT count(*) FILTER (WHERE status = 'fulfilled'),
                                         count(*) FILTER (WHERE status = 'breached')
                                  FROM sla_clocks WHERE metric = 'resolution' AND stop_reason = 'resolved'""").fetchone()
    assert met + breached == expected["resolved"]
    assert met / (met + breached) == expected["timely_ours"]
    open_count = db.execute("SELECT count(*) FROM workload_complaints WHERE is_open").fetchone()[0]
    assert open_count == expected["open"]
    teams = dict(db.execute("SELECT team, count(*) FROM workload_complaints GROUP BY team").fetchall())
    assert teams == expected["by_company"]
    # Nothing the CSV says is lost: the channel as submitted, and the timely-response rate
    # per company asked of the read models (the `timely_response` custom field).
    assert dict(db.execute("SELECT channel, count(*) FROM complaint_facts GROUP BY 1").fetchall()) == expected["channels"]
    with figures.request(db, Filters(period="all"), policy=POLICY) as r:  # as GET /rates answers
        timely = {row["key"]: (row["true_count"], row["count"]) for row in figures.rates(r, "timely_response", "team")}
        times = figures.assignment_times(r, "month")  # as GET /assignment-times answers
    assert timely == expected["timely_by_company"]
    # (minutes to 1e-6: microseconds divided into minutes against whole days times 1440)
    assert sorted((t["bucket"], t["team"], t["count"], round(t["p50_minutes"], 6), round(t["p90_minutes"], 6))
                  for t in times) == [(*row[:3], round(float(row[3]), 6), round(float(row[4]), 6))
                                      for row in expected["assignment"]]
    return {"ours": met / (met + breached), "cfpb": expected["timely_cfpb"]}


@pytest.mark.skipif(not SAMPLES, reason=f"CFPB samples not present in {DATA} (optional data set)")
def test_the_cfpb_samples_replay_into_the_read_models(tmp_path: Path) -> None:
    desk = desk_at(tmp_path)
    reports = [import_cfpb(desk, path, progress=False) for path in SAMPLES]
    assert sum(r.new for r in reports) == sum(r.rows for r in reports) == 8_690
    assert sum(r.cut for r in reports) == 0
    # The longest narrative (21,928 characters) is kept whole.
    longest = max((row for path in SAMPLES for row in cfpb_rows(path)),
                  key=lambda row: len(row["Consumer complaint narrative"] or ""))
    assert len(longest["Consumer complaint narrative"]) == 21_928
    kept = desk.get_complaint(complaint_id_for(f"cfpb-{longest['Complaint ID']}")).description
    assert kept.endswith(longest["Consumer complaint narrative"].strip())
    expected = from_csv(SAMPLES)
    rates = check_read_models(read_models_of(desk), expected)
    # Ours counts from Date received, the CFPB's from the day the company got it: ours can
    # only be lower, by at most the share of complaints forwarded late.
    assert rates["ours"] <= rates["cfpb"] + 0.01
    # A rebuild from the store gives the same read models.
    rebuild(tmp_path / "read.duckdb", desk, policy=POLICY, progress=False)
    check_read_models(duckdb.connect(str(tmp_path / "read.duckdb"), read_only=True), expected)


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in COLUMNS})
    return path


def sample_rows() -> list[dict[str, str]]:
    def row(cid: int, **fields: str) -> dict[str, str]:
        base = {"Date received": "2023-03-01", "Product": "Mortgage", "Issue": "Trouble during payment process",
                "Company": "BANK A", "State": "CA", "Submitted via": "Web", "Date sent to company": "2023-03-02",
                "Company response to consumer": "Closed with explanation", "Timely response?": "Yes",
                "Consumer disputed?": "N/A", "Complaint ID": str(cid)}
        return base | fields

    return [
        row(1),
        row(2, **{"Submitted via": "Phone", "Product": "Debt collection", "Date received": "2023-04-10",
                  "Date sent to company": "2023-04-10", "Sub-issue": "Debt is not yours",
                  "Consumer complaint narrative": "XXXX keeps calling " * 50}),
        row(3, **{"Submitted via": "Referral", "Company response to consumer": "Untimely response",
                  "Timely response?": "No"}),
        row(4, **{"Submitted via": "Postal mail", "Date received": "2023-01-05", "Date sent to company": "2023-02-20"}),
        row(5, **{"Company response to consumer": "In progress", "Company": "BANK B", "State": ""}),
        row(6, **{"Submitted via": "Fax", "Date received": "03/15/2023", "Date sent to company": "03/15/2023",
                  "Company response to consumer": "Closed with monetary relief"}),
        row(7, **{"Submitted via": "Email", "Date sent to company": "", "Product": "Debt collection"}),
        row(8, **{"Date received": "2023-02-01", "Date sent to company": "2023-02-16"}),  # exactly 15 days
        {"Date received": "2023-03-01", "Complaint ID": ""},  # no id: skipped
    ]


def test_a_csv_of_our_own_imports_idempotently_and_feeds_the_read_models(tmp_path: Path) -> None:
    rows = sample_rows()
    path = write_csv(tmp_path / "cfpb.csv", rows)
    desk = desk_at(tmp_path)
    first = import_cfpb(desk, path, progress=False)
    assert (first.rows, first.new, first.skipped) == (9, 8, 1)
    again = import_cfpb(desk, path, progress=False)
    assert (again.new, again.existing, again.commands) == (0, 8, 0)
    expected = from_csv([path])
    check_read_models(read_models_of(desk), expected)
    channels = dict(read_models_of(desk).execute("SELECT channel, count(*) FROM complaint_facts GROUP BY 1").fetchall())
    assert channels == {"web": 3, "phone": 1, "email": 1, "referral": 1, "postal_mail": 1, "fax": 1}
    # The columns our commands have no place for are custom fields; the narrative is whole.
    two = desk.get_complaint(complaint_id_for("cfpb-2"))
    assert two.fields == {"issue": "Trouble during payment process", "sub_issue": "Debt is not yours",
                          "timely_response": True}
    assert two.description.endswith(("XXXX keeps calling " * 50).strip())

    # The complaint in progress got its response: only that is new on the next import.
    rows[4]["Company response to consumer"] = "Closed with explanation"
    write_csv(path, rows)
    later = import_cfpb(desk, path, progress=False)
    assert (later.new, later.commands) == (0, 2)
    check_read_models(read_models_of(desk), from_csv([path]))


def test_the_cli_imports_a_cfpb_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_csv(tmp_path / "cfpb.csv", sample_rows())
    monkeypatch.setenv("COMPLAINTS_STORE", "sqlite")
    monkeypatch.setenv("COMPLAINTS_SQLITE_PATH", str(tmp_path / "events.sqlite"))
    from complaints.settings import get_settings

    get_settings.cache_clear()
    try:
        done = CliRunner().invoke(cli_app, ["import-cfpb", str(path), "--no-progress"])
        assert done.exit_code == 0, done.output
        assert "8 new complaints" in done.output and "1 rows skipped" in done.output
        assert CliRunner().invoke(cli_app, ["import-cfpb", "--help"]).exit_code == 0
    finally:
        get_settings.cache_clear()
