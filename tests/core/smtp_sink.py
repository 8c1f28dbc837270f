"""A tiny SMTP server on loopback for the senders' tests: EHLO, AUTH PLAIN, MAIL, RCPT, DATA.

Not a conftest: imported by name. Each accepted message is kept with its envelope; ``faults``
make it answer as a failing server would (a recipient refused, DATA refused, the connection
dropped after the final ``.``). The aiosmtpd suite (real server, STARTTLS) is separate.
"""

from __future__ import annotations

import base64
import socketserver
import threading
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
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
                        self.say("250 AUTH PLAIN")
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
