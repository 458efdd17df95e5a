"""``eyegc serve``: a local web page that predicts an uploaded image with the loaded bundles.

The page is plain HTML and JavaScript from ``static/`` (no build step, nothing fetched from the
internet). The browser sends the image as the request body (``POST /api/predict?model=&tta=&filename=``),
read up to the size limit and no further; the answer carries the display image, one transparent
layer per class, the areas or grades and the time taken; the downloads are kept in memory.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import uvicorn
from eyegc.common.errors import EyegcError
from eyegc.common.serve.predictions import PredictionService, UploadError, load_choices
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

__all__ = ["STATIC", "check_port_free", "create_app", "serve"]

STATIC = Path(__file__).with_name("static")


async def _read_limited(request: Request, limit: int) -> bytes:
    """The request body, or an UploadError once it passes ``limit`` bytes (the rest is never read)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise UploadError(_too_large(f"{int(declared) / 2**20:.1f} MB", limit), 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:  # a body sent without its length: stop reading at the limit
            raise UploadError(_too_large(f"over {limit / 2**20:.0f} MB", limit), 413)
        chunks.append(chunk)
    if not size:
        raise UploadError("the upload is empty: choose an image file")
    return b"".join(chunks)


def _too_large(size: str, limit: int) -> str:
    return f"the image is {size}; the page takes up to {limit / 2**20:.0f} MB (eyegc serve --max-upload-mb)"


def _attachment(filename: str) -> str:
    """A Content-Disposition naming the file: ASCII for old clients, UTF-8 (RFC 6266) for the others."""
    ascii_name = filename.encode("ascii", "replace").decode("ascii").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"


def create_app(service: PredictionService, max_upload_bytes: int) -> FastAPI:
    """The web app over a prediction service."""
    app = FastAPI(title="eyegc serve", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, exc: UploadError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.get("/")
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/models")
    async def models() -> dict:
        return {"models": [c.describe() for c in service.choices.values()], "max_upload_bytes": max_upload_bytes}

    @app.post("/api/predict")
    async def predict(request: Request, model: str, tta: str, filename: str) -> dict:
        data = await _read_limited(request, max_upload_bytes)
        result = await run_in_threadpool(service.predict, model, tta, data, filename)
        return result.summary

    @app.get("/api/results/{result_id}/{name}")
    async def download(result_id: str, name: str) -> Response:
        filename, media_type, data = service.download(result_id, name)
        headers = {"Content-Disposition": _attachment(filename)}
        return Response(data, media_type=media_type, headers=headers)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def check_port_free(host: str, port: int) -> None:
    """Raise an EyegcError naming the port when something already listens there."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            fix = (
                "give another with --port"
                if exc.errno == errno.EADDRINUSE
                else "give an address of this machine with --host"
            )
            raise EyegcError(f"cannot listen on {host}:{port} ({exc.strerror}): {fix}") from None


def serve(
    models: Sequence[Path],
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "auto",
    max_upload_mb: float = 64.0,
) -> None:
    """Load the bundles once, then serve the page until Ctrl-C."""
    check_port_free(host, port)
    service = PredictionService(load_choices(models), device)
    app = create_app(service, int(max_upload_mb * 2**20))
    print(f"eyegc serve: {len(service.choices)} model choice(s); open http://{host}:{port}/ (Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
