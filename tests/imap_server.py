"""A small real IMAP4rev1 server over TLS on loopback, for the `bounces process --imap` tests.

It speaks just what imaplib sends for that path: CAPABILITY, LOGIN, SELECT, UID SEARCH
(UNDELETED, NOT KEYWORD k), UID FETCH (BODY.PEEK[]), UID STORE +FLAGS, UID COPY, EXPUNGE,
LOGOUT. A self-signed certificate for 127.0.0.1 is made with openssl; clients trust it
through SSL_CERT_FILE.
"""

from __future__ import annotations

import re
import socketserver
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|\(([^)]*)\)|(\S+)')


def make_certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "imap-cert.pem", folder / "imap-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
    return cert, key


@dataclass
class StoredMessage:
    uid: int
    data: bytes
    folder: str = "INBOX"
    flags: set[str] = field(default_factory=set)


class Mailbox:
    def __init__(self, user: str, password: str):
        self.user, self.password = user, password
        self.messages: list[StoredMessage] = []
        self.lock = threading.Lock()

    def add(self, data: bytes, folder: str = "INBOX") -> None:
        with self.lock:
            self.messages.append(StoredMessage(len(self.messages) + 1, data, folder))

    def in_folder(self, folder: str) -> list[StoredMessage]:
        return [m for m in self.messages if m.folder == folder]


def _tokens(text: str) -> list[str]:
    found = []
    for match in _TOKEN.finditer(text):
        if match[1] is not None:
            found.append(match[1].replace('\\"', '"').replace("\\\\", "\\"))
        else:
            found.append(f"({match[2]})" if match[2] is not None else match[3])
    return found


class _Handler(socketserver.StreamRequestHandler):
    server: ImapTestServer

    def send(self, line: str | bytes) -> None:
        self.wfile.write(line if isinstance(line, bytes) else line.encode() + b"\r\n")

    def handle(self) -> None:
        box = self.server.mailbox
        selected = ""
        self.send("* OK IMAP4rev1 test server ready")
        while True:
            line = self.rfile.readline()
            if not line:
                return
            tag, _, rest = line.decode().rstrip("\r\n").partition(" ")
            command, _, args = rest.partition(" ")
            command = command.upper()
            if command == "CAPABILITY":
                self.send("* CAPABILITY IMAP4rev1 UIDPLUS")
            elif command == "LOGIN":
                user, password = _tokens(args)[:2]
                if (user, password) != (box.user, box.password):
                    self.send(f"{tag} NO [AUTHENTICATIONFAILED] invalid credentials")
                    continue
            elif command == "SELECT":
                selected = _tokens(args)[0]
                self.send(f"* {len(box.in_folder(selected))} EXISTS")
                self.send(f"{tag} OK [READ-WRITE] SELECT completed")
                continue
            elif command == "UID":
                self._uid(tag, args, selected)
                continue
            elif command == "EXPUNGE":
                with box.lock:
                    box.messages = [m for m in box.messages if "\\Deleted" not in m.flags]
            elif command == "LOGOUT":
                self.send("* BYE logging out")
                self.send(f"{tag} OK LOGOUT completed")
                return
            else:
                self.send(f"{tag} BAD unknown command")
                continue
            self.send(f"{tag} OK {command} completed")

    def _uid(self, tag: str, args: str, selected: str) -> None:
        box = self.server.mailbox
        sub, _, rest = args.partition(" ")
        sub = sub.upper()
        tokens = _tokens(rest)
        messages = {m.uid: m for m in box.in_folder(selected)}
        if sub == "SEARCH":
            words = [t.upper() for t in tokens]
            found = [m for m in messages.values() if "\\Deleted" not in m.flags]
            if "KEYWORD" in words:
                keyword = tokens[words.index("KEYWORD") + 1]
                found = [m for m in found if keyword not in m.flags]
            self.send("* SEARCH " + " ".join(str(m.uid) for m in found))
        elif sub == "FETCH":
            message = messages[int(tokens[0])]
            self.send(f"* {message.uid} FETCH (UID {message.uid} BODY[] {{{len(message.data)}}}\r\n".encode()
                      + message.data + b")\r\n")
        elif sub == "STORE":
            message = messages[int(tokens[0])]
            message.flags |= set(tokens[2].strip("()").split())
            self.send(f"* {message.uid} FETCH (UID {message.uid} FLAGS ({' '.join(sorted(message.flags))}))")
        elif sub == "COPY":
            message = messages[int(tokens[0])]
            box.add(message.data, tokens[1])
        self.send(f"{tag} OK UID {sub} completed")


class ImapTestServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, mailbox: Mailbox, cert: Path, key: Path):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mailbox = mailbox
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.port = self.server_address[1]
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self) -> ImapTestServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
