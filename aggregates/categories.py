"""The complaint categories a deployment works with: a list in a TOML file.

The read API narrows figures by one of them (`?category=`) and refuses any other; the
triage command records whatever category it is given (imports bring vocabularies of
their own, such as the CFPB's issues), so a deployment importing such data points
COMPLAINTS_CATEGORIES at a file listing those too.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

DEFAULT_CATEGORIES_PATH = Path(__file__).with_name("categories.toml")
Category = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^\S(.*\S)?$")]


class Categories(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    categories: tuple[Category, ...] = Field(min_length=1)

    @field_validator("categories")
    @classmethod
    def _once_each(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        twice = sorted({c for c in value if value.count(c) > 1})
        if twice:
            raise ValueError(f"listed more than once: {', '.join(twice)}")
        return value


def load_categories(path: str | Path | None = None) -> tuple[str, ...]:
    """The categories of a file; None reads the packaged aggregates/categories.toml."""
    p = Path(path) if path is not None else DEFAULT_CATEGORIES_PATH
    with p.open("rb") as f:
        data = tomllib.load(f)
    try:
        return Categories.model_validate(data).categories
    except ValueError as e:  # pydantic.ValidationError; keep its type, name the file
        e.add_note(f"while loading categories {p}")
        raise
