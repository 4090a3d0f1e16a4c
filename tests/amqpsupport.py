"""A real RabbitMQ server for tests and benchmarks: its own node name, ports, epmd and data folder.

Two runs on one machine never meet: the AMQP port, the Erlang distribution port and the epmd port are
free ports of this run, the node name carries them, and every file (Mnesia, logs, the Erlang cookie) lives
under the run's folder. No plugin is enabled (no management plugin).
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pika
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from appliance.config import Config, parse_config
from appliance.core import Appliance, StoreResult

from dicomdata import Instance

HOST = "127.0.0.1"
SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class BrokerUnavailable(RuntimeError):
    """The broker cannot be started on this machine."""


class Broker:
    """One RabbitMQ node on loopback.

    Parameters
    ----------
    base : Path
        Folder for its data, logs and Erlang cookie.
    """

    def __init__(self, base: Path) -> None:
        if not Path(SERVER).exists():
            raise BrokerUnavailable(
                "rabbitmq-server is not installed (scripts/test.sh installs the Debian package rabbitmq-server)"
            )
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.dist_port = _free_port()
        self.epmd_port = _free_port()
        self.node = f"apptest{self.port}@localhost"
        (base / "enabled_plugins").write_text("[].\n")
        # A TLS listener too, with a CA and a server certificate for 127.0.0.1 made by our own tls package.
        import tls

        self.tls_dir = base / "tls"
        tls.cmd_init(self.tls_dir, ["localhost"], ["127.0.0.1"])
        self.tls_port = _free_port()
        (base / "rabbitmq.conf").write_text(
            f"listeners.ssl.1 = {HOST}:{self.tls_port}\n"
            f"ssl_options.cacertfile = {self.tls_dir / 'ca.crt'}\n"
            f"ssl_options.certfile = {self.tls_dir / 'server.crt'}\n"
            f"ssl_options.keyfile = {self.tls_dir / 'server.key'}\n"
            "ssl_options.verify = verify_none\n"
            "ssl_options.fail_if_no_peer_cert = false\n"
        )
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))},
            "HOME": str(base),  # the Erlang cookie of this node and its CLI
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": HOST,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": HOST,
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(base / "rabbit.pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    # -- life cycle -------------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> None:
        """Start the node and wait until it takes AMQP connections.

        Raises
        ------
        BrokerUnavailable
            It did not come up; the message holds the end of its output.
        """
        out = open(self.base / "server.out", "ab")  # noqa: SIM115 - kept open for the server's life
        self.proc = subprocess.Popen(
            [SERVER],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self._amqp_answers():
                return
            time.sleep(0.25)
        tail = (self.base / "server.out").read_text(errors="replace")[-3000:]
        self.kill()
        raise BrokerUnavailable(f"rabbitmq-server did not start within {timeout:.0f} s:\n{tail}")

    def _amqp_answers(self) -> bool:
        try:
            conn = pika.BlockingConnection(self.parameters(socket_timeout=2))
        except Exception:
            return False
        conn.close()
        return True

    def stop(self) -> None:
        """Shut the node down cleanly (durable queues and persistent messages survive)."""
        if self.proc is None:
            return
        self.ctl("shutdown", check=False, timeout=120)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()
        self.proc = None

    def restart(self) -> None:
        """Stop, then start again on the same ports and data."""
        self.stop()
        self.start()

    def kill(self) -> None:
        """End the node process we started."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc = None

    def close(self) -> None:
        """Stop the node and the epmd of this run."""
        self.stop()
        epmd = shutil.which("epmd")
        if epmd:
            subprocess.run([epmd, "-port", str(self.epmd_port), "-kill"], env=self.env, capture_output=True, timeout=30)

    # -- control ----------------------------------------------------------------------------------

    def ctl(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        """Run rabbitmqctl against this node; return its output."""
        proc = subprocess.run(
            [CTL, "-n", self.node, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"rabbitmqctl {' '.join(args)} failed: {proc.stdout}{proc.stderr}")
        return proc.stdout

    def add_vhost(self, name: str) -> None:
        """Create a virtual host the guest user may use."""
        self.ctl("add_vhost", name)
        self.ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")

    def memory_alarm(self, on: bool) -> None:
        """Raise (a tiny memory watermark) or clear the broker's memory alarm."""
        self.ctl("set_vm_memory_high_watermark", "0.0000001" if on else "0.4")

    def parameters(self, vhost: str = "/", **kwargs: object) -> pika.ConnectionParameters:
        """pika parameters for a plain test client."""
        return pika.ConnectionParameters(HOST, self.port, vhost, pika.PlainCredentials("guest", "guest"), **kwargs)

    def client(self, vhost: str = "/") -> pika.BlockingConnection:
        """A plain pika connection."""
        return pika.BlockingConnection(self.parameters(vhost))


def drain(broker: Broker, queue: str, vhost: str = "/") -> list[tuple[bytes, pika.BasicProperties]]:
    """Take every message now in ``queue`` (acknowledged); bodies with their properties."""
    conn = broker.client(vhost)
    try:
        channel = conn.channel()
        out: list[tuple[bytes, pika.BasicProperties]] = []
        while True:
            method, props, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return out
            out.append((body, props))
    finally:
        conn.close()


# -- an appliance wired to the broker ------------------------------------------------------------

_names = itertools.count(1)


def amqp_table(broker: Broker, **overrides: Any) -> dict[str, Any]:
    """An [amqp] table on the test broker, with exchange and queue names no other test uses."""
    p = f"t{next(_names)}"
    table: dict[str, Any] = {
        "enabled": True,
        "host": "127.0.0.1",
        "port": broker.port,
        "reconnect_seconds": 0.2,
        "heartbeat": 10,
        "ris_exchange": f"{p}.RIS",
        "request_exchange": f"{p}.request",
        "mwl_queue": f"{p}.MWL",
        "mwl_changed_queue": f"{p}.MWL_changed",
        "studies_queue": f"{p}.Studies",
    }
    table.update(overrides)
    return table


def make_cfg(data_dir: Path, amqp: dict[str, Any], **tables: Any) -> Config:
    return parse_config({"appliance": {"data_dir": str(data_dir)}, "amqp": amqp, **tables})


def encoded(inst: Instance) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_dataset(fp, inst.dataset())
    return fp.getvalue()


class Running:
    """An appliance core with the AMQP service of ``serve`` (wired by the CLI's build_amqp)."""

    def __init__(self, cfg: Config, declare: bool = True) -> None:
        from appliance.cli.amqp import build_amqp
        from appliance.notify.amqp import declare as declare_names

        self.cfg = cfg
        if declare:
            declare_names(cfg.amqp)
        self.app = Appliance(cfg)
        self.app.start()
        self.service = build_amqp(self.app, cfg)
        self.service.start()

    def store(self, inst: Instance) -> StoreResult:
        ds = inst.dataset()
        return self.app.store(
            encoded(inst),
            str(ds.file_meta.TransferSyntaxUID),
            str(ds.SOPClassUID),
            str(ds.SOPInstanceUID),
            "TESTSCU",
            self.cfg.dicom.ae_title,
        )

    def backlog(self) -> int:
        return int(self.service.status()["backlog"])

    def link(self, role: str = "publisher") -> dict[str, Any]:
        """State of the publisher or the consumer (state, last_error, count)."""
        return dict(self.service.status()[role] or {})

    def stop(self) -> None:
        self.service.stop()
        self.app.stop()
