"""Attacks on the web site found by the hostile-input run (issue 15), each reproduced and bounded.

The attack clients are raw sockets or plain HTTP clients on loopback, bounded in count and time.
"""

from __future__ import annotations

import contextlib
import html
import http.client
import re
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest

from appliance import tls_contexts
from appliance.cli.web import WebService
from appliance.config import parse_config
from appliance.core import Appliance
from appliance.errors import InvalidValue

from conftest import HOST, free_port, wait_until

ADMIN = ("admin", "admin-password-1")  # the users of the web tests' conftest
DESK = ("desk", "desk-password-1")

_CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


class Client:
    """A plain HTTP client on a served site that keeps its cookies (they can be copied, as a thief would)."""

    def __init__(self, url: str, cookies: dict[str, str] | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname or HOST, parts.port or 80
        self.cookies: dict[str, str] = dict(cookies or {})

    def request(
        self, method: str, path: str, form: dict[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=20)
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            text = response.read().decode("utf-8", "replace")
            for header in response.msg.get_all("Set-Cookie") or []:
                for name, morsel in SimpleCookie(header).items():
                    if morsel.value and morsel["max-age"] != "0":
                        self.cookies[name] = morsel.value
                    else:
                        self.cookies.pop(name, None)
            return response.status, dict(response.getheaders()), text
        finally:
            conn.close()

    def get(self, path: str, **kwargs: Any) -> tuple[int, dict[str, str], str]:
        return self.request("GET", path, **kwargs)

    def csrf(self, path: str) -> str:
        match = _CSRF_RE.search(self.get(path)[2])
        assert match, f"{path} has no form"
        return html.unescape(match.group(1))

    def login(self, who: tuple[str, str]) -> int:
        token = self.csrf("/staff/login")
        return self.request("POST", "/staff/login", {"name": who[0], "password": who[1], "csrf_token": token})[0]

    def post(self, path: str, form: dict[str, str], page: str = "/staff/studies") -> int:
        return self.request("POST", path, {**form, "csrf_token": self.csrf(page)})[0]


def _get(url: str, context: ssl.SSLContext | None = None, timeout: float = 10) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
        return response.status, response.read()


# -- [tls] verify_peer and the patient site (finding 12) ----------------------------------------------------


def test_patient_https_site_needs_no_client_certificate(tmp_path: Path) -> None:
    """With ``verify_peer = true`` DICOM and HL7 demand client certificates; the web site never does."""
    cfg = parse_config(
        {
            "appliance": {"data_dir": str(tmp_path / "data")},
            "dicom": {"bind": HOST, "port": 0, "tls_port": 0},
            "hl7": {"port": 0},
            "tls": {"verify_peer": True},
            "web": {"bind": HOST, "port": free_port(), "https": True},
        }
    )
    app = Appliance(cfg)
    app.start()
    web = WebService(app, cfg)
    web.start()
    try:
        assert tls_contexts.server_context(cfg).verify_mode == ssl.CERT_REQUIRED  # DICOM / HL7 TLS ports
        context = ssl.create_default_context(cafile=str(tmp_path / "data" / "tls-demo" / "ca.crt"))
        context.check_hostname = False
        # A patient's browser: trusts the server, has no certificate of its own.
        status, body = _get(f"https://{HOST}:{web.server.port}/", context)
        assert status == 200 and b"link" in body.lower()
    finally:
        web.stop()
        app.stop()


# -- revocable sessions (finding 8) ---------------------------------------------------------------------------


def test_staff_cookie_stops_working_after_logout(live: Any) -> None:
    served = live()
    alice = Client(served.url)
    assert alice.login(ADMIN) == 302
    stolen = Client(served.url, alice.cookies)  # a copy of the cookie, taken while signed in
    assert stolen.get("/api/whoami")[0] == 200
    assert alice.post("/staff/logout", {}) == 302
    assert stolen.get("/api/whoami")[0] == 401
    assert stolen.get("/staff/studies")[0] == 302  # to the sign-in page
    # Signing in again opens a new session; the old copy stays dead.
    assert alice.login(ADMIN) == 302 and alice.get("/api/whoami")[0] == 200
    assert stolen.get("/api/whoami")[0] == 401


def test_staff_cookie_stops_working_after_password_or_role_change(live: Any) -> None:
    served = live()
    site = served.env.site
    desk_id = site.users.by_name(DESK[0]).id
    admin = Client(served.url)
    assert admin.login(ADMIN) == 302
    desk = Client(served.url)
    assert desk.login(DESK) == 302
    stolen = Client(served.url, desk.cookies)
    assert stolen.get("/api/whoami")[0] == 200
    assert admin.post(f"/staff/users/{desk_id}/password", {"password": "reset-password-9"}, "/staff/users") == 302
    assert stolen.get("/api/whoami")[0] == 401 and desk.get("/api/whoami")[0] == 401
    assert desk.login((DESK[0], "reset-password-9")) == 302
    stolen = Client(served.url, desk.cookies)
    assert admin.post(f"/staff/users/{desk_id}/role", {"role": "admin"}, "/staff/users") == 302
    assert stolen.get("/api/whoami")[0] == 401
    # Changing one's own password ends the other sessions of the account, not the one that changed it.
    assert desk.login((DESK[0], "reset-password-9")) == 302
    elsewhere = Client(served.url)
    assert elsewhere.login((DESK[0], "reset-password-9")) == 302
    form = {"current": "reset-password-9", "password": "own-password-7", "again": "own-password-7"}
    assert desk.post("/staff/account", form, "/staff/account") == 302
    assert desk.get("/api/whoami")[0] == 200
    assert elsewhere.get("/api/whoami")[0] == 401


def test_patient_cookie_stops_working_at_leave(live: Any) -> None:
    served = live()
    patient = Client(served.url)
    status, headers, _ = patient.get("/token?" + served.env.token("ct"))
    assert status == 303 and headers["Location"].endswith("/study")
    stolen = Client(served.url, patient.cookies)
    assert stolen.get("/study")[0] == 200
    assert patient.get("/leave")[0] == 200
    assert "appliance_patient" not in patient.cookies
    assert stolen.get("/study")[0] == 404
    series = served.env.site.catalog.series(served.env.studies["ct"])[0]["series_uid"]
    assert stolen.get(f"/study/thumb/{series}.jpg")[0] == 404
    # The link itself still works (until it expires), with a new session.
    assert patient.get("/token?" + served.env.token("ct"))[0] == 303 and patient.get("/study")[0] == 200
    assert stolen.get("/study")[0] == 404


# -- rate limits that cannot lock everyone out (finding 10) ---------------------------------------------------

WRONG_LINK = "/token?" + "A" * 64


def test_wrong_links_never_refuse_a_valid_link_or_a_sign_in(live: Any) -> None:
    """Everyone behind one address (a hospital NAT, a proxy): one client's wrong links block nobody else."""
    served = live(rate_limit=5, rate_window=600)
    attacker = Client(served.url)
    answers = [attacker.get(WRONG_LINK)[0] for _ in range(8)]
    assert answers[:5] == [404] * 5 and answers[5:] == [429] * 3
    patient = Client(served.url)  # same address, another patient
    assert patient.get("/token?" + served.env.token("ct"))[0] == 303
    assert patient.get("/study")[0] == 200
    assert attacker.get(WRONG_LINK)[0] == 429  # the attacker stays limited
    # Staff sign-ins have their own counters: wrong links do not use them up.
    assert Client(served.url).login(ADMIN) == 302


def test_failed_sign_ins_never_refuse_staff_their_usual_browser(live: Any) -> None:
    served = live(rate_limit=5, rate_window=600)
    admin, desk = Client(served.url), Client(served.url)
    for browser, who in ((admin, ADMIN), (desk, DESK)):  # each signed in on this browser before
        assert browser.login(who) == 302
        assert browser.post("/staff/logout", {}) == 302
    attacker = Client(served.url)  # same address
    answers = [attacker.login((ADMIN[0], f"guess-{n}")) for n in range(7)]
    assert answers[:5] == [401] * 5 and answers[5:] == [429] * 2
    assert attacker.login((DESK[0], "guess-x")) == 429  # the address is used up as well
    assert attacker.login(ADMIN) == 429  # the attacker learns nothing, even with the right password
    # The right credentials from the browsers the users signed in with before: not refused.
    assert admin.login(ADMIN) == 302 and admin.get("/api/whoami")[0] == 200
    assert desk.login(DESK) == 302 and desk.get("/api/whoami")[0] == 200
    # Patients are not affected at all.
    assert Client(served.url).get("/token?" + served.env.token("mr"))[0] == 303
    # A trusted browser's own failures still count, against that browser only.
    assert admin.post("/staff/logout", {}) == 302
    assert [admin.login((ADMIN[0], "typo")) for _ in range(6)][-1] == 429
    assert desk.post("/staff/logout", {}) == 302 and desk.login(DESK) == 302


# -- slowly trickled headers (finding 5) ----------------------------------------------------------------------


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _served_within(port: int, seconds: float, source: str = HOST) -> None:
    start = time.monotonic()
    conn = http.client.HTTPConnection(HOST, port, timeout=seconds, source_address=(source, 0))
    try:
        conn.request("GET", "/robots.txt")
        response = conn.getresponse()
        assert response.status == 200 and b"Disallow" in response.read()
    finally:
        conn.close()
    assert time.monotonic() - start < seconds


def _closed_by_server(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_slowly_trickled_headers_do_not_take_the_site_down(env_factory: Any) -> None:
    """~210 connections trickling a request header used to fill waitress's connection limit: nobody was served."""
    from webui.server import WebServer

    env = env_factory()
    server = WebServer(env.flask, HOST, 0, threads=4, header_timeout=3)
    server.start()
    port = server.port
    attack: list[socket.socket] = []
    stop = threading.Event()

    def trickle() -> None:  # a header line every half second on every connection: never silent, never done
        n = 0
        while not stop.wait(0.5) and n < 40:
            n += 1
            for sock in list(attack):
                with contextlib.suppress(OSError):
                    sock.send(f"X-Slow-{n}: x\r\n".encode())

    trickler = threading.Thread(target=trickle, daemon=True)
    try:
        _served_within(port, 5)
        rss_before = _rss_mb()
        for _ in range(250):
            sock = socket.create_connection((HOST, port), timeout=5)
            with contextlib.suppress(OSError):
                sock.sendall(b"GET /staff/login HTTP/1.1\r\nHost: x\r\n")
            attack.append(sock)
        trickler.start()
        # While the attack holds: a client elsewhere, and one behind the attacker's own address, are served.
        _served_within(port, 5, source="127.0.0.2")
        _served_within(port, 5)
        mine = [c for c in server.server.active_channels.values() if c.addr and c.addr[0] == HOST]
        assert len(mine) <= server.max_connections_per_client
        # Every trickling connection is closed once its header is late, however busy it keeps the line.
        wait_until(lambda: all(_closed_by_server(s) for s in attack), timeout=20)
        _served_within(port, 5)
        assert _rss_mb() - rss_before < 50
    finally:
        stop.set()
        for sock in attack:
            sock.close()
        server.stop()


def test_opening_a_link_in_a_loop_keeps_a_bounded_number_of_sessions(env: Any) -> None:
    from appliance.site.sessions import MAX_PER_TOKEN

    client = env.client()
    cookies = []
    for _ in range(MAX_PER_TOKEN + 15):
        response = client.get("/token?" + env.token("ct"))
        assert response.status_code == 303
        cookies.append(client.get_cookie("appliance_patient").value)
    count = env.app.db.conn.execute("SELECT COUNT(*) FROM patient_sessions").fetchone()[0]
    assert count == MAX_PER_TOKEN
    newest, oldest = env.client(), env.client()
    newest.set_cookie("appliance_patient", cookies[-1])
    oldest.set_cookie("appliance_patient", cookies[0])
    assert newest.get("/study").status_code == 200 and oldest.get("/study").status_code == 404


def test_silent_and_stalled_tls_clients_do_not_shut_out_https(env_factory: Any, tmp_path: Path) -> None:
    """On HTTPS the handshake runs before waitress sees the connection: silent clients are capped too."""
    from webui.server import WebServer

    env = env_factory(https=True)
    context = tls_contexts.server_context(env.cfg, verify_peer=False)
    server = WebServer(
        env.flask, HOST, 0, threads=4, ssl_context=context, handshake_timeout=30, max_connections_per_client=20
    )
    server.start()
    client_context = ssl.create_default_context(cafile=str(env.cfg.data_dir / "tls-demo" / "ca.crt"))
    client_context.check_hostname = False

    def served(source: str = HOST) -> None:
        start = time.monotonic()
        conn = http.client.HTTPSConnection(
            HOST, server.port, timeout=5, context=client_context, source_address=(source, 0)
        )
        try:
            conn.request("GET", "/robots.txt")
            assert conn.getresponse().status == 200
        finally:
            conn.close()
        assert time.monotonic() - start < 5

    threads_before = threading.active_count()
    attack: list[socket.socket] = []
    try:
        for n in range(120):  # half say nothing, half start a ClientHello and stall
            sock = socket.create_connection((HOST, server.port), timeout=5)
            if n % 2:
                sock.sendall(b"\x16\x03\x01\x02\x00\x01")
            attack.append(sock)
        wait_until(lambda: threading.active_count() - threads_before <= 21)  # 20 handshakes from one address
        served("127.0.0.2")
        served()  # behind the attacker's address: the oldest stalled handshake made room
        assert threading.active_count() - threads_before <= 25
    finally:
        for sock in attack:
            sock.close()
        server.stop()


def test_disabling_a_user_ends_their_sessions_and_sign_ins(live: Any) -> None:
    served = live()
    desk = Client(served.url)
    assert desk.login(DESK) == 302
    stolen = Client(served.url, desk.cookies)
    admin = Client(served.url)
    assert admin.login(ADMIN) == 302
    desk_id = served.env.site.users.by_name(DESK[0]).id
    assert admin.post(f"/staff/users/{desk_id}/disable", {}, "/staff/users") == 302
    assert stolen.get("/api/whoami")[0] == 401 and desk.get("/api/whoami")[0] == 401
    assert desk.login(DESK) == 401
    assert "disabled" in admin.get("/staff/users")[2]
    assert admin.post(f"/staff/users/{desk_id}/enable", {}, "/staff/users") == 302
    assert desk.login(DESK) == 302
    # The last enabled admin cannot be disabled (nobody could manage users any more).
    admin_id = served.env.site.users.by_name(ADMIN[0]).id
    with pytest.raises(InvalidValue, match="last admin"):
        served.env.site.users.set_disabled(admin_id, True)
    assert admin.get("/api/whoami")[0] == 200
