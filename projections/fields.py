"""The desk's own vocabulary as read models: custom field values and tags.

`complaint_fields` holds each complaint's current custom field values in a narrow long
table, one row per (complaint, field) and, for a multiple choice, one per chosen option:
a new field is new rows, never a new column (no schema migration), and a group-by or a
filter on one field reads only that field's rows. The value sits in the column of its
JSON type, so numbers, dates and true/false compare as such:
- a string (text, single choice, date) -> `value_text`; one of the form `YYYY-MM-DD` also
  `value_date`;
- a number -> `value_number`; true/false -> `value_bool`;
- a list (multiple choice) -> one row per element;
- an attachment -> `value_text` its sha-256; a geolocation -> `value_text` "lat,lon".
The types come from the values in the events, not from the current field definitions:
a retired field, or one whose definition changed, keeps the values it was given.

The current value of a field is the `after` of the complaint's latest FieldsUpdated that
names it (`null`, or an empty list, clears it); `updated_at` is that event's time.

`complaint_tags` holds each complaint's current tags (normalised by the write side): a
tag is there when its latest TagAdded / TagRemoved is an addition; `added_at` is the
time of that addition.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import duckdb

from projections.bulk import BulkProjector
from projections.facts import Scope

FIELDS = "complaint_fields"
TAGS = "complaint_tags"
FIELD_PREFIX = "field:"  # a grouping by a custom field: `field:<name>`

FIELD_COLUMNS = """
    complaint_id VARCHAR, field VARCHAR, value_text VARCHAR, value_number DOUBLE, value_bool BOOLEAN,
    value_date DATE, updated_at TIMESTAMPTZ
"""
TAG_COLUMNS = "complaint_id VARCHAR, tag VARCHAR, added_at TIMESTAMPTZ"

# One text per value, for grouping and display: the text, true/false, or the number
# (whole numbers without a decimal point, as they were entered).
VALUE_KEY = """coalesce(value_text, CAST(value_bool AS VARCHAR),
    CASE WHEN value_number = trunc(value_number) AND abs(value_number) < 1e15
         THEN CAST(CAST(value_number AS BIGINT) AS VARCHAR) ELSE CAST(value_number AS VARCHAR) END)"""


def fields_sql(parsed: str) -> str:
    """The current custom field values of the complaints in `parsed` (see the module)."""
    return f"""
    WITH changed AS (
        SELECT complaint_id, v, ts,
               unnest(map_entries(CAST(CAST(changes AS JSON) AS MAP(VARCHAR, JSON)))) AS change
        FROM {parsed} WHERE t = 'FieldsUpdated'
    ), latest AS (
        SELECT complaint_id, change.key AS field,
               arg_max_null(json_extract(change.value, '$.after'), v) AS after, arg_max(ts, v) AS updated_at
        FROM changed GROUP BY ALL
    ), chosen AS (
        SELECT complaint_id, field, updated_at,
               unnest(CASE WHEN json_type(after) = 'ARRAY' THEN CAST(after AS JSON[]) ELSE [after] END) AS value
        FROM latest WHERE coalesce(json_type(after), 'NULL') <> 'NULL'
    )
    SELECT complaint_id, field,
        CASE json_type(value)
            WHEN 'VARCHAR' THEN value ->> '$'
            WHEN 'OBJECT' THEN coalesce(value ->> '$.sha256',
                                        (value ->> '$.lat') || ',' || (value ->> '$.lon'))
        END AS value_text,
        CASE WHEN json_type(value) IN ('BIGINT', 'UBIGINT', 'DOUBLE') THEN CAST(value AS DOUBLE) END
            AS value_number,
        CASE WHEN json_type(value) = 'BOOLEAN' THEN CAST(value AS BOOLEAN) END AS value_bool,
        CASE WHEN json_type(value) = 'VARCHAR' AND regexp_full_match(value ->> '$', '\\d{{4}}-\\d{{2}}-\\d{{2}}')
             THEN TRY_CAST(value ->> '$' AS DATE) END AS value_date,
        updated_at
    FROM chosen WHERE coalesce(json_type(value), 'NULL') <> 'NULL'
    """


def tags_sql(parsed: str) -> str:
    """The current tags of the complaints in `parsed`."""
    return f"""
    SELECT complaint_id, tag, arg_max(ts, v) AS added_at
    FROM {parsed} WHERE t IN ('TagAdded', 'TagRemoved')
    GROUP BY complaint_id, tag HAVING arg_max(t, v) = 'TagAdded'
    """


class FieldsProjector(BulkProjector):
    name = "fields"
    schema_version = 1
    tables = {FIELDS: FIELD_COLUMNS, TAGS: TAG_COLUMNS}

    def selects(self, db: duckdb.DuckDBPyConnection, scope: Scope) -> dict[str, str]:
        parsed = scope.parsed(db)
        return {FIELDS: fields_sql(parsed), TAGS: tags_sql(parsed)}


def matching_sql(
    table: Callable[[str], str], field_values: Sequence[tuple[str, str]], tags: Sequence[str],
    mark: Callable[[int], str], column: str = "complaint_id",
) -> tuple[list[str], list[Any]]:
    """SQL conditions on the complaint id `column` picking the complaints that have every
    one of `field_values` ((field, value as text) pairs) and every one of `tags`.

    `table` names a read-model table in the caller's view (the live one, or an as-of
    build); `mark(i)` writes the i-th parameter's placeholder (`?`, or `$name_i`).
    A value matches a row whose text equals it, or whose number, date or true/false
    equals it read as one (`3` matches 3.0, `true` matches true).
    """
    conditions: list[str] = []
    params: list[Any] = []

    def param(value: Any) -> str:
        params.append(value)
        return mark(len(params) - 1)

    for field, value in field_values:
        # One placeholder per use: positional parameters cannot be repeated.
        conditions.append(
            f"""{column} IN (SELECT complaint_id FROM {table(FIELDS)} WHERE field = {param(field)}
                AND (value_text = {param(value)} OR value_number = TRY_CAST({param(value)} AS DOUBLE)
                     OR value_bool = TRY_CAST({param(value)} AS BOOLEAN)
                     OR value_date = TRY_CAST({param(value)} AS DATE)))""")
    for tag in tags:
        conditions.append(f"{column} IN (SELECT complaint_id FROM {table(TAGS)} WHERE tag = {param(tag)})")
    return conditions, params
