"""A loopback SMTP server for the e-mail tests, run as its own process: ``python smtp_sink.py PORT DIR [--refuse]``.

Each accepted mail is written to ``DIR/<n>.eml``; with ``--refuse`` every mail is answered 554. Prints "ready"
once it listens, and runs until terminated.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


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


def main() -> None:
    port, folder = int(sys.argv[1]), Path(sys.argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    controller = Controller(Sink(folder, "--refuse" in sys.argv), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    controller.stop()


if __name__ == "__main__":
    main()
