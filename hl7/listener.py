"""The HL7 listener of the appliance: an MLLP server whose frames go to the message processor."""

from __future__ import annotations

import logging
import ssl

from appliance.core import Appliance
from appliance.errors import ConfigError
from hl7.er7 import ER7Error, resolve_charset
from hl7.handlers import MessageProcessor
from hl7.mllp import MLLPServer

LOGGER = logging.getLogger("hl7")


class HL7Listener:
    """MLLP on ``[hl7] bind``:``port`` (optionally inside TLS) feeding the worklist.

    Parameters
    ----------
    app : Appliance
        The core.
    ssl_context : ssl.SSLContext, optional
        Server context when ``[hl7] tls = true``.

    Raises
    ------
    ConfigError
        When ``[hl7] default_charset`` is not a known character set.
    """

    def __init__(self, app: Appliance, ssl_context: ssl.SSLContext | None = None) -> None:
        cfg = app.config.hl7
        try:
            resolve_charset(cfg.default_charset)
        except ER7Error:
            raise ConfigError(
                f"[hl7] default_charset {cfg.default_charset!r} is not a known character set "
                "(e.g. 8859/1, UNICODE UTF-8, cp1252)"
            ) from None
        self.app = app
        self.processor = MessageProcessor(app, cfg)
        self.ssl_context = ssl_context
        self.server: MLLPServer | None = None

    def start(self) -> None:
        """Open the port and serve in a background thread."""
        cfg = self.app.config.hl7
        self.server = MLLPServer(
            (cfg.bind, cfg.port),
            self.processor,
            self.ssl_context,
            cfg.max_message_kb * 1024,
            cfg.idle_timeout,
            cfg.max_connections,
            self.app.config.tls.handshake_timeout,
            cfg.first_message_timeout,
            cfg.message_timeout,
            cfg.max_connections_per_peer,
        )
        self.server.start()
        LOGGER.info("HL7 listening%s on %s:%d", " with TLS" if self.ssl_context else "", cfg.bind, self.server.port)

    @property
    def port(self) -> int:
        """The bound port (0 before :meth:`start`)."""
        return self.server.port if self.server is not None else 0

    def stop(self) -> None:
        """Stop accepting and close the connections."""
        if self.server is not None:
            self.server.stop()
            self.server = None
