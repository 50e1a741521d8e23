"""Serves the dashboard page and the charting library from where it is installed.

The page is our own HTML, CSS and JavaScript (`read_api/static/`); Plotly's browser
bundle is served from the installed `plotly` Python package, so nothing third-party is
copied into the repository and nothing is fetched from a CDN at run time.

The page signs in (`/auth/config`, then the development sign-in or the provider's) and
shows each role its own views: which ones, it reads from `/static/access.json`, made
from the permission matrix (`aggregates.access`), so the page and the API never
disagree. The names of the codes (statuses, categories...) in both languages, and the
desk's time zone, it reads from `/static/vocabulary.json` (`aggregates.vocabulary`), with
`i18n.js`, which the other pages share. The shell is public; every figure behind it needs
a bearer token.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from aggregates.access import (
    ACKNOWLEDGE_ALERT,
    EXPORT,
    MATRIX,
    READ_ALERTS,
    READ_AUDIT,
    READ_EXECUTIVE,
    READ_MODELS,
    READ_PRODUCT,
    READ_SUPERVISOR,
    ROLE_NAMES,
    TEAM_BOUND,
)
from aggregates.vocabulary import vocabulary

STATIC = Path(__file__).resolve().parent / "static"
OWN_FILES = {"dashboard.css": "text/css", "dashboard.js": "text/javascript", "i18n.js": "text/javascript",
             "workspace.js": "text/javascript", "workspace.css": "text/css"}
CACHE = {"cache-control": "public, max-age=86400"}
# The page's views, each with the permissions its requests need (the read API asks the same):
# the executive view draws two of its charts from /trends.
VIEWS = {"supervisor": (READ_SUPERVISOR,), "product": (READ_PRODUCT,), "executive": (READ_EXECUTIVE, READ_MODELS),
         "audit": (READ_AUDIT,)}


def access_rules() -> dict[str, dict[str, object]]:
    """Per role, in the matrix's order: its names, the views it may open, whether it may
    read the read models (the filters' drop-downs) and export, read and acknowledge alerts,
    and whether it is team-bound."""
    return {
        role: {"en": en, "zh": zh, "views": [view for view, needs in VIEWS.items() if set(needs) <= MATRIX[role]],
               "models": READ_MODELS in MATRIX[role], "export": EXPORT in MATRIX[role],
               "alerts": READ_ALERTS in MATRIX[role], "acknowledge": ACKNOWLEDGE_ALERT in MATRIX[role],
               "team_bound": role in TEAM_BOUND}
        for role, (en, zh) in ROLE_NAMES.items()
    }


@lru_cache
def plotly_bundle() -> Path:
    """plotly.min.js inside the installed plotly package."""
    path = Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: install the project's dependencies (pip install -e .) to get plotly"
        )
    return path


def page_router(time_zone: str) -> APIRouter:
    """The pages' routes; `time_zone` is the desk's (the settings'), in which pages show dates."""
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    def root() -> RedirectResponse:
        return RedirectResponse("/dashboard")

    @router.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)

    @router.get("/dashboard")
    def dashboard() -> FileResponse:
        return FileResponse(STATIC / "dashboard.html", media_type="text/html", headers={"cache-control": "no-cache"})

    @router.get("/workspace")
    def workspace() -> FileResponse:
        return FileResponse(STATIC / "workspace.html", media_type="text/html", headers={"cache-control": "no-cache"})

    @router.get("/static/access.json")
    def access() -> Response:
        return JSONResponse(access_rules(), headers={"cache-control": "no-cache"})

    @router.get("/static/vocabulary.json")
    def names() -> Response:
        return JSONResponse(vocabulary(time_zone), headers={"cache-control": "no-cache"})

    @router.get("/static/vendor/plotly.min.js")
    def plotly() -> FileResponse:
        return FileResponse(plotly_bundle(), media_type="text/javascript", headers=CACHE)

    @router.get("/static/{name}")
    def own(name: str) -> FileResponse:
        if name not in OWN_FILES:
            raise HTTPException(404, f"no static file {name}")
        return FileResponse(STATIC / name, media_type=OWN_FILES[name], headers={"cache-control": "no-cache"})

    return router
