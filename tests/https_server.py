"""A local HTTPS stand-in for grand-challenge.org's API: gcapi refuses plain http, so the tests serve
their handler over TLS with a throw-away self-signed certificate on 127.0.0.1."""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

__all__ = ["send_json", "serve_https"]


def send_json(handler: BaseHTTPRequestHandler, body: Any, status: int = 200) -> None:
    """Answer with ``body`` as JSON (the Content-Type gcapi checks before decoding)."""
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


@contextmanager
def serve_https(handler: type[BaseHTTPRequestHandler], folder: Path) -> Iterator[str]:
    """Serve ``handler`` on 127.0.0.1 over TLS; yields the API root ``https://127.0.0.1:PORT/api/v1/``."""
    made = subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem")),
        ],
        capture_output=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip("openssl cannot make a test certificate here")
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/api/v1/"
    finally:
        server.shutdown()
