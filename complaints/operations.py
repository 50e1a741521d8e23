"""What an operator watches on every process: /health, /ready and /metrics.

- `/health`: the process is alive and answering (200 always): restart it when this fails;
- `/ready`: it can do its job (200, or 503 with the reason): send it traffic only then.
  A read node is ready once it has caught up with its source; the command API once the
  event store answers;
- `/metrics`: Prometheus text format, from the process's one registry (the packages
  define their metrics in `commands.metrics` and `consumers.metrics`).

HTTP processes get these routes on their own port; headless ones (the relay, a read node
without --serve) serve them on COMPLAINTS_METRICS_PORT.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)

# A readiness check: None when ready, else what the process is waiting for.
Check = Callable[[], str | None]


def operations_router(*checks: Check) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/health", summary="Liveness: the process answers")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/ready", summary="Readiness: 200 when the process can do its job, else 503 and why")
    def ready() -> JSONResponse:
        waiting = [reason for check in checks if (reason := _run(check))]
        if waiting:
            return JSONResponse({"ready": False, "waiting_for": waiting}, status_code=503)
        return JSONResponse({"ready": True})

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def _run(check: Check) -> str | None:
    try:
        return check()
    except Exception as error:  # a failing check is a reason not to be ready, not a 500
        return f"{type(error).__name__}: {error}"


def serve_operations(host: str, port: int, *checks: Check) -> threading.Thread:
    """/health, /ready and /metrics of a headless process, on a thread of their own."""
    import uvicorn

    # Probes and a scraper read this port, never people or generated clients: no OpenAPI either.
    app = FastAPI(title="Complaints: operations", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(operations_router(*checks))
    # Off the main thread uvicorn leaves signals alone: the process's own handlers stop it.
    # log_config=None: uvicorn's loggers go through the process's handler (JSON or text).
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", log_config=None))
    thread = threading.Thread(target=server.run, name="operations", daemon=True)
    thread.start()
    log.info("operations on http://%s:%d (/health, /ready, /metrics)", host, port)
    return thread
