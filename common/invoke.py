"""Invoke mode: the algorithm image as a web server that loads its bundles once and predicts per request.

grand-challenge.org runs every algorithm image through its runner, sagemaker-shim. In the default
*exec* mode the runner starts the image's ENTRYPOINT once per case, so every case reloads every
fold. An image labelled ``org.grand-challenge.api-method=invoke`` (the platform reads the label
when the image is imported) is run in *invoke* mode instead: the runner starts the ENTRYPOINT once,
polls ``GET http://127.0.0.1:4743/health`` until it answers 200, then for each case fills
``/input``, calls ``POST /invoke`` (no body) and expects 201 once ``/output`` is written; it empties
both folders between cases. The runner removes its own ``GRAND_CHALLENGE_*`` variables from the
process's environment, so the image decides its mode from what ``submit.sh --api`` baked into it
(``EYEGC_API_METHOD``), and listens on the runner's default port unless ``EYEGC_PORT`` says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import uvicorn
from eyegc.common.errors import EyegcError, user_error_message
from fastapi import FastAPI
from fastapi.responses import JSONResponse

__all__ = ["API_METHODS", "API_METHOD_LABEL", "DEFAULT_PORT", "create_app", "serve"]

#: The image label the platform reads to pick the runner's mode (absent: exec).
API_METHOD_LABEL = "org.grand-challenge.api-method"
#: The runner's modes; exec runs the ENTRYPOINT per case, invoke serves every case from one process.
API_METHODS = ("exec", "invoke")
#: sagemaker-shim's default GRAND_CHALLENGE_COMPONENT_USER_WEBSERVER_PORT.
DEFAULT_PORT = 4743


def create_app(
    run_one: Callable[[], dict[str, Any]],
    log: Callable[[str, bool], None],
) -> FastAPI:
    """The two endpoints the runner calls; ``run_one`` predicts the case in ``/input`` into ``/output``.

    ``/invoke`` answers 201 with the case's summary, or 422 with the one-line message of a bad case
    (a user error: the runner marks the job failed and the next case still runs); a bug answers
    500 and keeps its traceback in the log.
    """
    app = FastAPI(title="eyegc algorithm", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}  # served only once the bundles are loaded: ready means ready

    @app.post("/invoke", status_code=201)
    def invoke() -> Any:
        try:
            summary = run_one()
        except (EyegcError, OSError) as error:
            message = user_error_message(error)
            if message is None:
                raise
            log(f"error: {message}", True)
            return JSONResponse({"error": message}, status_code=422)
        return summary

    return app


def serve(run_one: Callable[[], dict[str, Any]], port: int, log: Callable[[str, bool], None]) -> None:
    """Serve cases until the runner stops the process (SIGTERM); ``run_one`` as for :func:`create_app`."""
    log(f"invoke mode: serving /health and /invoke on 127.0.0.1:{port}", False)
    uvicorn.run(create_app(run_one, log), host="127.0.0.1", port=port, log_level="warning")
