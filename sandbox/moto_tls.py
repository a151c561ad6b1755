"""moto_server with one fix for pgBackRest: send a TLS close_notify before closing a connection.

Why: werkzeug's dev server answers every request with 'Connection: close' and then closes the TLS
socket without a close_notify. For a 0-length, non-XML reply (e.g. the reply to a PUT) pgBackRest
reads until EOF, OpenSSL 3 reports 'unexpected eof while reading', pgBackRest retries forever and
fails with ERROR [101]. Unwrapping the socket first sends the close_notify.

Run it as a script with moto_server's own arguments, e.g.
    python moto_tls.py -H 127.0.0.1 -p 9444 -c s3.crt -k s3.key
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import sys
from typing import Any

from werkzeug import serving

_orig_shutdown_request = serving.BaseWSGIServer.shutdown_request


def shutdown_request(self: serving.BaseWSGIServer, request: Any) -> None:
    """Send close_notify (and wait briefly for the peer's) before werkzeug closes the socket."""
    if isinstance(request, ssl.SSLSocket):
        # The peer may already be gone: then closing is all that is left to do.
        with contextlib.suppress(OSError, ValueError):
            request.settimeout(2)
            request.unwrap()
    _orig_shutdown_request(self, request)


serving.BaseWSGIServer.shutdown_request = shutdown_request  # type: ignore[method-assign,assignment]

_orig_get_request = serving.BaseWSGIServer.get_request


def get_request(self: serving.BaseWSGIServer) -> tuple[Any, Any]:
    """Accept with Nagle's algorithm off.

    Why: werkzeug writes a response in several small sends; with Nagle on, each one after the
    first waits for the client's delayed ACK, which cost every request about 43 ms. Measured with
    curl, a new TLS connection per PUT or GET: 47-49 ms to the last byte before, 9-24 ms with
    TCP_NODELAY, the TLS handshake included (restore speed issue).
    """
    conn, addr = _orig_get_request(self)
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn, addr


serving.BaseWSGIServer.get_request = get_request  # type: ignore[method-assign,assignment]


def main(argv: list[str]) -> None:
    # Imported after the patch so the server moto builds uses the patched class.
    from moto.server import main as moto_main

    moto_main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
