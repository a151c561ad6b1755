"""Just enough of the PostgreSQL wire protocol to read the SQLSTATE of a refused connection.

libpq (and so psycopg and psql) reports connection-time errors as text only; the checks need the
code the server sent (28000: no pg_hba entry, 28P01: wrong password). This speaks the startup
and SCRAM-SHA-256 exchange itself and returns the server's ErrorResponse fields.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import ssl
import struct

SSL_REQUEST = 80877103
PROTOCOL_3 = 196608


class Conn:
    def __init__(self, sock):
        self.sock = sock

    def send(self, kind: bytes, payload: bytes) -> None:
        self.sock.sendall(kind + struct.pack("!I", len(payload) + 4) + payload)

    def read(self) -> tuple[bytes, bytes]:
        head = self._exact(5)
        length = struct.unpack("!I", head[1:])[0]
        return head[:1], self._exact(length - 4)

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("server closed the connection")
            buf += chunk
        return buf


def _fields(payload: bytes) -> dict[str, str]:
    out = {}
    for part in payload.split(b"\0"):
        if part:
            out[chr(part[0])] = part[1:].decode(errors="replace")
    return out


def handshake(host: str, port: int, user: str, dbname: str, password: str, tls: bool = True,
              timeout: float = 5) -> dict[str, str | None]:  # fmt: skip
    """Connect and authenticate; return {"sqlstate", "message"} (both None when accepted)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        if tls:
            sock.sendall(struct.pack("!II", 8, SSL_REQUEST))
            if sock.recv(1) == b"S":
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                sock = ctx.wrap_socket(sock)
        conn = Conn(sock)
        params = f"user\0{user}\0database\0{dbname}\0\0".encode()
        body = struct.pack("!I", PROTOCOL_3) + params
        sock.sendall(struct.pack("!I", len(body) + 4) + body)
        scram: dict[str, str] = {}
        while True:
            kind, payload = conn.read()
            if kind == b"E":
                f = _fields(payload)
                return {"sqlstate": f.get("C"), "message": f.get("M")}
            if kind == b"Z":
                return {"sqlstate": None, "message": None}
            if kind != b"R":
                continue
            code = struct.unpack("!I", payload[:4])[0]
            if code == 10:  # SASL: start SCRAM-SHA-256
                nonce = base64.b64encode(os.urandom(18)).decode()
                first_bare = f"n=,r={nonce}"
                scram.update(first_bare=first_bare, nonce=nonce)
                data = f"n,,{first_bare}".encode()
                conn.send(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(data)) + data)
            elif code == 11:  # SASL continue: prove the password
                server_first = payload[4:].decode()
                attrs = dict(item.split("=", 1) for item in server_first.split(","))
                salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
                client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
                stored_key = hashlib.sha256(client_key).digest()
                final_bare = f"c=biws,r={attrs['r']}"
                auth_message = f"{scram['first_bare']},{server_first},{final_bare}".encode()
                signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
                proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
                conn.send(b"p", f"{final_bare},p={base64.b64encode(proof).decode()}".encode())
            elif code in (0, 12):
                continue
            else:
                return {"sqlstate": None, "message": f"unsupported authentication request {code}"}
    finally:
        sock.close()
