"""A tiny SMTP server on loopback for the senders' tests: EHLO, AUTH PLAIN, MAIL, RCPT, DATA.

Not a conftest: imported by name. Each accepted message is kept with its envelope; ``faults``
make it answer as a failing server would (a recipient refused, DATA refused, the connection
dropped after the final ``.``). The aiosmtpd suite (real server, STARTTLS) is separate.
"""

from __future__ import annotations

import base64
import socketserver
import ssl
import threading
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes
    user: str | None

    @property
    def message(self) -> Message:
        return message_from_bytes(self.data)


@dataclass
class Faults:
    refuse_recipient: str | None = None  # "550 no such user" / "451 try later"
    refuse_data: str | None = None
    drop_after_data: bool = False


@dataclass
class SmtpSink:
    user: str = "escbridge"
    password: str = "smtp-pass-0123"
    received: list[Received] = field(default_factory=list)
    faults: Faults = field(default_factory=Faults)
    host: str = "127.0.0.1"
    port: int = 0
    tls: ssl.SSLContext | None = None  # offer STARTTLS with this server context
    _server: Any = None

    def start(self) -> SmtpSink:
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def say(self, line: str) -> None:
                self.wfile.write(line.encode() + b"\r\n")
                self.wfile.flush()

            def handle(self) -> None:
                self.say("220 sink ESMTP")
                sender, recipients, user = "", [], None
                while True:
                    raw = self.rfile.readline()
                    if not raw:
                        return
                    line = raw.decode().rstrip("\r\n")
                    verb = line.split(" ", 1)[0].upper()
                    if verb in ("EHLO", "HELO"):
                        self.say("250-sink")
                        if sink.tls is not None and not isinstance(self.request, ssl.SSLSocket):
                            self.say("250-STARTTLS")
                        self.say("250 AUTH PLAIN")
                    elif verb == "STARTTLS" and sink.tls is not None:
                        self.say("220 go ahead")
                        self.request = sink.tls.wrap_socket(self.request, server_side=True)
                        self.rfile = self.request.makefile("rb")
                        self.wfile = self.request.makefile("wb")
                    elif verb == "AUTH":
                        parts = line.split(" ")
                        decoded = base64.b64decode(parts[2]).split(b"\0") if len(parts) > 2 else []
                        if decoded[1:] == [sink.user.encode(), sink.password.encode()]:
                            user = sink.user
                            self.say("235 ok")
                        else:
                            self.say("535 authentication failed")
                    elif verb == "MAIL":
                        sender = line.split(":", 1)[1].strip().strip("<>").split(">")[0]
                        self.say("250 ok")
                    elif verb == "RCPT":
                        if sink.faults.refuse_recipient:
                            self.say(sink.faults.refuse_recipient)
                            continue
                        recipients.append(line.split(":", 1)[1].strip().strip("<>"))
                        self.say("250 ok")
                    elif verb == "DATA":
                        if sink.faults.refuse_data:
                            self.say(sink.faults.refuse_data)
                            continue
                        self.say("354 go ahead")
                        data = b""
                        while True:
                            chunk = self.rfile.readline()
                            if chunk in (b".\r\n", b""):
                                break
                            data += chunk[1:] if chunk.startswith(b"..") else chunk
                        sink.received.append(Received(sender, list(recipients), data, user))
                        if sink.faults.drop_after_data:
                            return  # the message is in, the answer never comes
                        self.say("250 queued")
                    elif verb == "RSET":
                        self.say("250 ok")
                    elif verb == "QUIT":
                        self.say("221 bye")
                        return
                    else:
                        self.say("502 not implemented")

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server((self.host, 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def self_signed(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A throw-away certificate for 127.0.0.1: (the server's context, a client context that
    trusts it and nothing else)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client
