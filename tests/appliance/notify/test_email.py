"""E-mail alerts against a real SMTP server on loopback (aiosmtpd in its own process): ``appliance email test``,
a server that refuses, one that is down and comes back, the hourly limit with its count, and alerts raised by
a full storage without slowing or failing C-STORE."""

from __future__ import annotations

import email
import subprocess
import sys
from collections.abc import Callable, Iterator
from email.message import Message
from pathlib import Path
from typing import cast

import pytest
from upkeep_support import cli, config, mount_tmpfs, started, store, umount, write_toml

from appliance.config import EmailConfig, parse_config
from appliance.db import Database
from appliance.notify.email import MailQueue

import dicomdata
from conftest import free_port, wait_until

SINK = Path(__file__).resolve().parents[2] / "smtp_sink.py"
SECRET = "pa55-W0rd-never-shown"


class SmtpServer:
    """An aiosmtpd process on a loopback port; mails land in ``folder``."""

    def __init__(self, port: int, folder: Path, refuse: bool = False, extra: tuple[str, ...] = ()) -> None:
        self.port = port
        self.folder = folder
        args = [sys.executable, str(SINK), str(port), str(folder), *extra] + (["--refuse"] if refuse else [])
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def mails(self) -> list[Message]:
        return [
            email.message_from_bytes(p.read_bytes())
            for p in sorted(self.folder.glob("*.eml"), key=lambda p: int(p.stem))
        ]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[Callable[..., SmtpServer]]:
    servers: list[SmtpServer] = []

    def start(port: int | None = None, refuse: bool = False, extra: tuple[str, ...] = ()) -> SmtpServer:
        server = SmtpServer(port or free_port(), tmp_path / f"mail{len(servers)}", refuse, extra)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def _email(port: int, **extra: object) -> dict[str, object]:
    table: dict[str, object] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "security": "none",
        "from": "appliance@example.org",
        "to": ["desk@example.org", "admin@example.org"],
    }
    table.update(extra)
    return table


def _body(msg: Message) -> str:
    part = msg.get_payload(decode=True)
    assert isinstance(part, bytes)
    return part.decode()


def test_email_test_command_sends_a_mail(tmp_path: Path, smtp) -> None:
    server = smtp()
    cfg = write_toml(tmp_path / "a.toml", tmp_path / "var", free_port(), email=_email(server.port))
    done = cli("email", "test", "--config", str(cfg))
    assert done.returncode == 0, done.stderr
    wait_until(lambda: server.mails(), timeout=20)
    (mail,) = server.mails()
    assert mail["Subject"] == "appliance test mail"
    assert mail["From"] == "appliance@example.org"
    assert mail["X-Rcpt-To"] == "desk@example.org, admin@example.org"
    assert "alerts reach you" in _body(mail)


def test_email_test_reports_a_refusing_and_a_down_server(tmp_path: Path, smtp) -> None:
    refusing = smtp(refuse=True)
    cfg = write_toml(tmp_path / "a.toml", tmp_path / "var", free_port(), email=_email(refusing.port))
    done = cli("email", "test", "--config", str(cfg))
    assert done.returncode == 1 and "554" in done.stderr and "refused" in done.stderr
    down = free_port()
    cfg = write_toml(
        tmp_path / "b.toml", tmp_path / "var", free_port(), email=_email(down, user="alerts", password=SECRET)
    )
    done = cli("email", "test", "--config", str(cfg))
    assert done.returncode == 1 and f"cannot reach 127.0.0.1:{down}" in done.stderr
    assert SECRET not in done.stderr + done.stdout


def test_the_password_is_never_shown(tmp_path: Path, smtp, caplog) -> None:
    server = smtp()  # takes no AUTH: the login fails, and the reason must not carry the password
    cfg = parse_config({"email": _email(server.port, user="alerts", password=SECRET)})
    assert SECRET not in repr(cfg) and SECRET not in repr(cfg.email)
    queue = MailQueue(Database(tmp_path / "db.sqlite"), cfg.email, retry_first=0.1)
    assert queue.alert("save_error", "CT1", "an image could not be saved")
    queue.deliver_due()
    (row,) = queue.recent()
    assert row["state"] == "queued" and row["error"] and SECRET not in str(row)
    assert SECRET not in caplog.text


def test_a_down_server_is_retried_with_back_off_until_it_is_back(tmp_path: Path, smtp) -> None:
    port = free_port()
    cfg = EmailConfig("127.0.0.1", port, "none", sender="appliance@example.org", to=("desk@example.org",))
    queue = MailQueue(Database(tmp_path / "db.sqlite"), cfg, tick=0.1, retry_first=0.5)
    assert queue.alert("disc_job_failed", "job 7", "Disc job 7 failed: tray jammed")
    queue.start()
    try:
        wait_until(lambda: cast(int, queue.recent()[0]["attempts"]) >= 2, timeout=20)  # an SQLite column
        row = queue.recent()[0]
        assert row["state"] == "queued" and "cannot reach" in str(row["error"])
        server = smtp(port)
        wait_until(lambda: server.mails(), timeout=30)
        (mail,) = server.mails()
        assert mail["Subject"] == "[appliance] a disc job failed: job 7"
        assert "tray jammed" in _body(mail)
        wait_until(lambda: queue.recent()[0]["state"] == "sent", timeout=20)  # the 250 comes after the file
    finally:
        queue.stop()


def test_one_mail_per_event_and_object_per_hour_with_the_count(tmp_path: Path, smtp) -> None:
    server = smtp()
    cfg = EmailConfig("127.0.0.1", server.port, "none", sender="appliance@example.org", to=("desk@example.org",))
    db = Database(tmp_path / "db.sqlite")
    queue = MailQueue(db, cfg)
    assert queue.alert("save_error", "CT1", "first")
    assert [queue.alert("save_error", "CT1", f"again {n}") for n in range(4)] == [False] * 4
    assert queue.alert("save_error", "MR2", "another sender")  # another object: its own mail
    assert not queue.alert("robot_needs_staff", "epson", "not chosen") or "robot_needs_staff" in cfg.events
    assert queue.deliver_due() >= 2
    # An hour later the next alert is mailed and says how many were held back.
    with db.transaction() as conn:
        conn.execute("UPDATE email_queue SET created = '2000-01-01T00:00:00.000000Z' WHERE object = 'CT1'")
    assert queue.alert("save_error", "CT1", "an hour later")
    queue.deliver_due()
    bodies = [_body(m) for m in server.mails() if "CT1" in m["Subject"]]
    assert len(bodies) == 2
    assert "4 more alert(s) of this kind for CT1 were not mailed" in bodies[1]


def test_events_not_chosen_are_not_mailed(tmp_path: Path) -> None:
    cfg = EmailConfig("127.0.0.1", 25, "none", sender="a@example.org", to=("b@example.org",), events=("save_error",))
    queue = MailQueue(Database(tmp_path / "db.sqlite"), cfg)
    assert not queue.alert("storage_unavailable", "storage 1", "gone")
    assert queue.alert("save_error", "CT1", "failed")


def test_a_full_storage_mails_the_staff_and_store_answers_at_once(tmp_path: Path, smtp) -> None:
    from appliance.cli.upkeep import Upkeep

    disk = tmp_path / "disk"
    mount_tmpfs(disk, "4m")
    server = smtp()
    try:
        cfg = config(
            tmp_path / "var", storage=[{"path": str(disk / "s"), "free_space_limit_mb": 2}], email=_email(server.port)
        )
        node = started(cfg)
        upkeep = Upkeep(node.app, cfg, workers=0)
        upkeep.mail.tick = 0.1
        upkeep.mail.start()
        try:
            items = dicomdata.study("PFULLMAIL", "FULL^MAIL", ("CT",), 30, rows=256, columns=256)
            statuses = store(node.port, items)
            assert 0xA700 in statuses and 0 in statuses
            wait_until(lambda: server.mails(), timeout=30)
            mails = server.mails()
            assert len(mails) == 1, "one mail per hour, however many refusals"
            assert mails[0]["Subject"].startswith("[appliance] free-space limit reached")
            body = _body(mails[0])
            assert str(disk / "s") in body and "0xA700" in body
        finally:
            upkeep.mail.stop()
            node.stop()
    finally:
        umount(disk)


def test_an_unreachable_smtp_server_does_not_fail_a_store(tmp_path: Path) -> None:
    cfg = config(tmp_path / "var", email=_email(free_port()))
    from appliance.cli.upkeep import Upkeep

    node = started(cfg)
    upkeep = Upkeep(node.app, cfg, workers=0)
    upkeep.mail.start()
    try:
        node.app.store_area.free_space_limit = node.app.store_area.free_bytes() + 10**9
        items = dicomdata.study("PDOWN", "DOWN^MAIL", ("CT",), 3)
        assert store(node.port, items) == [0xA700] * 3
        node.app.store_area.free_space_limit = 0
        assert store(node.port, dicomdata.study("PDOWN2", "DOWN^MAIL", ("CT",), 2)) == [0, 0]
        rows = upkeep.mail.recent()
        assert [r["event"] for r in rows] == ["free_space_limit"] and rows[0]["suppressed"] == 2
    finally:
        upkeep.mail.stop()
        node.stop()


def test_a_storage_that_vanishes_while_running_is_mailed(tmp_path: Path, smtp) -> None:
    from appliance.cli.upkeep import Upkeep

    share = tmp_path / "share"
    mount_tmpfs(share, "2m")
    server = smtp()
    try:
        cfg = config(
            tmp_path / "var",
            storage=[{"path": str(share)}, {"path": str(tmp_path / "local")}],
            email=_email(server.port),
        )
        node = started(cfg)
        upkeep = Upkeep(node.app, cfg, workers=0)
        upkeep.mail.tick = 0.1
        upkeep.mail.start()
        try:
            items = dicomdata.study("PGONE", "GONE^SHARE", ("CT",), 2)
            assert store(node.port, items) == [0, 0]
            umount(share)  # the share goes away under the running server
            node.app.store_area.refresh()  # what the maintenance thread does every 2 s
            assert not node.app.store_area.get(1).available
            assert node.app.index.counts()["instances"] == 2
            wait_until(lambda: server.mails(), timeout=30)
            (mail,) = server.mails()
            assert mail["Subject"] == "[appliance] storage unavailable: storage 1"
            assert str(share) in _body(mail) and "stay in the index" in _body(mail)
            assert store(node.port, dicomdata.study("PGONE2", "GONE^SHARE", ("CT",), 1)) == [0]
        finally:
            upkeep.mail.stop()
            node.stop()
    finally:
        umount(share)


def test_disc_jobs_that_fail_or_need_staff_are_mailed(tmp_path: Path, smtp) -> None:
    from appliance.discs.jobs import JobState, JobStore
    from appliance.notify.email import DiscJobWatcher

    server = smtp()
    cfg = EmailConfig("127.0.0.1", server.port, "none", sender="appliance@example.org", to=("desk@example.org",))
    db = Database(tmp_path / "db.sqlite")
    queue = MailQueue(db, cfg)
    watcher = DiscJobWatcher(db, queue)
    jobs = JobStore(db)
    failing = jobs.create("epson", 1, ["1.2.3"], source="manual")
    waiting = jobs.create("primera", 1, ["1.2.4"], source="manual")
    jobs.transition(failing, JobState.AUTHORING)
    jobs.transition(failing, JobState.FAILED, "image too big", error="the content does not fit on a BD")
    jobs.note(waiting, "Load discs into the input bin", needs_staff=True)
    watcher()
    queue.deliver_due()
    subjects = sorted(m["Subject"] for m in server.mails())
    assert subjects == [
        f"[appliance] a disc job failed: job {failing}",
        "[appliance] a disc robot needs staff: robot primera",
    ]
    bodies = " ".join(_body(m) for m in server.mails())
    assert "does not fit on a BD" in bodies and "Load discs" in bodies
    watcher()  # nothing changed since: no second mail
    assert queue.deliver_due() == 0


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a server certificate for 127.0.0.1, made by ``appliance tls init``."""
    folder = tmp_path_factory.mktemp("smtp-tls")
    done = cli("tls", "init", str(folder / "tls"), "--ip", "127.0.0.1")
    assert done.returncode == 0, done.stderr
    return folder / "tls"


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_starttls_and_tls_with_a_login(tmp_path: Path, smtp, certs: Path, security: str) -> None:
    server = smtp(
        extra=(f"--{security}", str(certs / "server.crt"), str(certs / "server.key"), "--login", "alerts", SECRET)
    )
    trust = {"SSL_CERT_FILE": str(certs / "ca.crt")}  # the SMTP server's CA, as a site would install it
    cfg = write_toml(
        tmp_path / "a.toml",
        tmp_path / "var",
        free_port(),
        email=_email(server.port, security=security, user="alerts", password=SECRET),
    )
    done = cli("email", "test", "--config", str(cfg), env=trust)
    assert done.returncode == 0, done.stderr
    wait_until(lambda: server.mails(), timeout=20)
    assert server.mails()[0]["Subject"] == "appliance test mail"
    wrong = write_toml(
        tmp_path / "b.toml",
        tmp_path / "var",
        free_port(),
        email=_email(server.port, security=security, user="alerts", password="not-" + SECRET),
    )
    done = cli("email", "test", "--config", str(wrong), env=trust)
    assert done.returncode == 1 and "535" in done.stderr
    assert SECRET not in done.stderr + done.stdout
    untrusted = cli("email", "test", "--config", str(cfg))  # the CA is not trusted: the server is not believed
    assert untrusted.returncode == 1 and "certificate verify failed" in untrusted.stderr
    assert len(server.mails()) == 1
