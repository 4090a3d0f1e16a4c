"""A loopback SMTP server for the e-mail tests, run as its own process:
``python smtp_sink.py PORT DIR [--refuse] [--starttls CERT KEY | --tls CERT KEY] [--login USER PASSWORD]``.

Each accepted mail is written to ``DIR/<n>.eml``; with ``--refuse`` every mail is answered 554. ``--starttls``
offers and requires STARTTLS, ``--tls`` speaks TLS from the first byte, ``--login`` requires AUTH with that user
and password (over TLS). Prints "ready" once it listens, and runs until terminated.
"""

from __future__ import annotations

import os
import signal
import ssl
import sys
import threading
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Sink:
    def __init__(self, folder: Path, refuse: bool) -> None:
        self.folder = folder
        self.refuse = refuse
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse:
            return "554 5.7.1 Message refused by the test server"
        self.count += 1
        tmp = self.folder / f".{self.count}.part"
        tmp.write_bytes(b"X-Rcpt-To: " + ", ".join(envelope.rcpt_tos).encode() + b"\r\n" + envelope.original_content)
        os.replace(tmp, self.folder / f"{self.count}.eml")
        return "250 OK"


def _option(name: str, count: int) -> list[str] | None:
    if name not in sys.argv:
        return None
    at = sys.argv.index(name)
    return sys.argv[at + 1 : at + 1 + count]


def main() -> None:
    port, folder = int(sys.argv[1]), Path(sys.argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {}
    for name in ("--starttls", "--tls"):
        files = _option(name, 2)
        if files:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(files[0], files[1])
            if name == "--tls":
                # aiosmtpd only knows of TLS it started itself (STARTTLS): say the connection is safe for AUTH.
                kwargs.update(ssl_context=context, auth_require_tls=False)
            else:
                kwargs.update(tls_context=context, require_starttls=True)
    login = _option("--login", 2)
    if login:

        def check(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
            ok = (
                isinstance(data, LoginPassword)
                and data.login.decode() == login[0]
                and data.password.decode() == login[1]
            )
            return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself

        kwargs.update(authenticator=check, auth_required=True, auth_exclude_mechanism=["LOGIN"])
    controller = Controller(Sink(folder, "--refuse" in sys.argv), hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    print("ready", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    controller.stop()


if __name__ == "__main__":
    main()
