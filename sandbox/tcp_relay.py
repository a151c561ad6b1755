"""A plain TCP relay: the test bed's "front door" of the S3 endpoint (stdlib only).

Why: moto keeps its buckets in memory, so stopping moto to simulate "object store down" would lose
every backup. The test bed runs moto (TLS, see moto_tls.py) on 127.0.0.1 and this relay on the
bridge address the guests use; an outage is this relay stopped (clients get "connection refused"),
and starting it again restores the service with moto's data intact. The relay copies bytes both
ways and forwards half-closes, so TLS (including close_notify) passes through untouched.

    python tcp_relay.py LISTEN_HOST:PORT UPSTREAM_HOST:PORT
"""

from __future__ import annotations

import asyncio
import signal
import sys

CHUNK = 256 * 1024


def _split(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host, int(port)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then pass the EOF on (half-close) so the other side sees the end too."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


async def _serve(listen: str, upstream: str) -> None:
    up_host, up_port = _split(upstream)

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(up_host, up_port)
        except OSError:
            client_w.close()
            return
        try:
            await asyncio.gather(_pipe(client_r, up_w), _pipe(up_r, client_w))
        finally:
            for w in (client_w, up_w):
                w.close()

    host, port = _split(listen)
    server = await asyncio.start_server(handle, host, port, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"relay {listen} -> {upstream}", flush=True)
    await stop.wait()
    # Close the listener but do not wait for open connections (Server.wait_closed would on 3.12+):
    # asyncio.run cancels them on return, which cuts them as a dead server would.
    server.close()


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        sys.exit(__doc__)
    asyncio.run(_serve(argv[0], argv[1]))


if __name__ == "__main__":
    main(sys.argv[1:])
