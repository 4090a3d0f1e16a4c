"""CLI parts of the web site: ``appliance token``, ``appliance user ...`` and the web server in ``serve``.

Kept apart from :mod:`appliance.cli` so that it stays readable; :mod:`appliance.cli` remains the composition
root and calls :func:`build_web` and :func:`add_parsers`.
"""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.config import Config, NodeConfig
from appliance.errors import InvalidValue, ListenerError, NotFound

if TYPE_CHECKING:  # pragma: no cover
    from appliance.site.service import Site

LOGGER = logging.getLogger("appliance")

#: Seconds between GIL switches while the web site runs (Python's default is 0.005).
WEB_SWITCH_INTERVAL = 0.001


class WebService:
    """The patient-token store listener, and the web server when ``[web] port`` is set.

    Parameters
    ----------
    app : Appliance
        The core.
    cfg : Config
        The configuration.
    """

    def __init__(self, app: Any, cfg: Config) -> None:
        self.server: Any = None
        self.dicomweb: Any = None
        if cfg.web.port:
            from appliance import tls_contexts
            from webui import create_app
            from webui.server import WebServer

            # Never a client certificate on the web: patients' browsers have none ([tls] verify_peer is for
            # DICOM and HL7 peers).
            context = tls_contexts.server_context(cfg, verify_peer=False) if cfg.web.https else None
            self.site = build_site(app, cfg)
            web_app = create_app(cfg, app, site=self.site)
            _raise_open_files_limit(cfg.web.max_connections + 512)  # connections, the database, the listeners
            try:
                self.server = WebServer(
                    web_app,
                    cfg.web.bind,
                    cfg.web.port,
                    cfg.web.threads,
                    context,
                    cfg.tls.handshake_timeout,
                    cfg.web.header_timeout,
                    cfg.web.max_connections,
                    cfg.web.max_connections_per_client,
                )
            except OSError as exc:
                raise ListenerError.port("web", "[web] port", cfg.web.bind, cfg.web.port, exc) from None
            if cfg.dicomweb.port:
                self.dicomweb = _dicomweb_server(self.site, cfg)
        else:
            self.site = build_site(app, cfg)
        # Every stored study gets its token even with the web site off: disc labels and slips print the link.
        self.site.attach(prerender=self.server is not None)

    def start(self) -> None:
        """Forget tokens expired for over a year, then start serving (nothing when the web site is off)."""
        purged = self.site.tokens.purge_expired(older_than_days=365)
        if purged:
            LOGGER.info("forgot %d patient token(s) that expired over a year ago", purged)
        if self.server is not None:
            # Web threads that wake up (a request read, a thumbnail back from its render process) wait for the
            # GIL behind busy threads for up to the switch interval: 1 ms instead of Python's 5 ms kept patient
            # pages under 100 ms (p95) while thumbnails were rendered for 50 clients (bench/web).
            sys.setswitchinterval(WEB_SWITCH_INTERVAL)
            self.server.start()
            self._announce()
        if self.dicomweb is not None:
            self.dicomweb.start()

    def _announce(self) -> None:
        """Say where a person finds the site, and how to make the first staff user (issue 20: lead to the UI)."""
        base = self.site.links.base_url()
        LOGGER.info("staff web UI: %s/staff/ ; patient links: %s/token?...", base, base)
        web = self.site.config.web
        if not web.server_name and web.bind in ("0.0.0.0", "::", ""):
            from appliance.site.links import machine_address

            host = machine_address()
            try:
                ipaddress.ip_address(host.strip("[]"))
            except ValueError:
                LOGGER.warning(
                    "no network address found: patient links name the host %r, which phones may not "
                    "reach; set [web] server_name to the name or address patients use",
                    host,
                )
        if not self.site.users.all():
            LOGGER.warning(
                "no staff user yet: create the first admin with `appliance user add NAME --role admin`, "
                "then sign in at %s/staff/",
                base,
            )

    def stop(self) -> None:
        """Stop serving: running requests may finish; queued audit rows are committed."""
        if self.dicomweb is not None:
            self.dicomweb.stop()
        if self.server is not None:
            self.server.stop()
        self.site.close()


def _raise_open_files_limit(wanted: int) -> None:
    """Raise the soft limit of open files towards ``wanted`` (up to the hard limit), saying so when it falls short.

    systemd's default soft limit (1024) is below ``[web] max_connections``; the hard one is usually far higher.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        LOGGER.warning(
            "open files are limited to %d: [web] max_connections needs about %d (raise LimitNOFILE)", target, wanted
        )


def dicomweb_https(cfg: Config) -> bool:
    """Whether DICOMweb is served over HTTPS: with a ``[tls]`` certificate, or when the web site is HTTPS."""
    return bool(cfg.tls.cert) or cfg.web.https


#: DICOMweb reads uploads 256 KB at a time (STOW-RS bodies are tens of MB; waitress's default is 8 KB).
_DICOMWEB_RECV_BYTES = 256 * 1024


def _dicomweb_server(site: Any, cfg: Config) -> Any:
    """The DICOMweb server on ``[dicomweb] port``.

    DICOMweb shares the web site's core (users, patient tokens, audit), so it runs only with the web site.
    A port that cannot be opened ends the start like every other listener's (one line, exit code 9): a
    configured service that is silently off is found only when a viewer fails.
    """
    from appliance import tls_contexts
    from webui.dicomweb import create_dicomweb_app
    from webui.server import WebServer

    dw = cfg.dicomweb
    bind = dw.bind or cfg.web.bind
    # Like the web site: no client certificate asked for ([tls] verify_peer is for DICOM and HL7 peers).
    context = tls_contexts.server_context(cfg, verify_peer=False) if dicomweb_https(cfg) else None
    web = cfg.web
    try:
        return WebServer(
            create_dicomweb_app(site),
            bind,
            dw.port,
            dw.threads,
            context,
            cfg.tls.handshake_timeout,
            web.header_timeout,
            web.max_connections,
            web.max_connections_per_client,
            name="DICOMweb",
            recv_bytes=_DICOMWEB_RECV_BYTES,
        )
    except OSError as exc:
        raise ListenerError.port("DICOMweb", "[dicomweb] port", bind, dw.port, exc) from None


def build_site(app: Any, cfg: Config, robots: bool = False) -> Site:
    """The web site's core over ``app``, with the C-ECHO of known nodes wired in.

    Parameters
    ----------
    app : Appliance
        The core.
    cfg : Config
        The configuration.
    robots : bool
        Also hand the burn queue the configured robots and a publisher to cancel with (outside ``serve``,
        whose running disc publishing is handed over with ``site.discs.use_publishing``).
    """
    from appliance.site.service import Site

    def echo(node: NodeConfig, timeout: float) -> tuple[bool, str]:
        from appliance.dicom.scu import echo as scu_echo

        tls = app.client_tls() if node.tls and app.client_tls else None
        result = scu_echo(node.host, node.port, node.ae_title, cfg.dicom.ae_title, timeout, tls)
        return result.online, result.reason

    site = Site(app, echo=echo)
    if robots:
        from appliance.discs.publisher import DiscPublisher
        from appliance.discs.publishing import build_robots

        found = build_robots(cfg)
        site.discs.use_robots(found, DiscPublisher(site.discs.jobs, found))
    return site


def build_web(app: Any, cfg: Config) -> WebService:
    """The web service of ``appliance serve`` (call before the DICOM ports open, so no study misses its token)."""
    return WebService(app, cfg)


def _site(cfg: Config) -> Site:
    from appliance.core import Appliance
    from appliance.site.audit import Audit

    site = build_site(Appliance(cfg), cfg)
    site.audit = Audit(site.app.db)  # a command ends at once: write its audit rows directly
    return site


def cmd_token(args: argparse.Namespace, cfg: Config) -> int:
    """Print the patient link of a stored study (and write its slip with ``--slip``)."""
    site = _site(cfg)
    try:
        if args.regenerate:
            site.tokens.ensure(args.study_uid, site.studies.study(args.study_uid)["study_date"])
            site.tokens.regenerate(args.study_uid)
        link = site.links.link(args.study_uid)
    except NotFound:
        raise NotFound(f"study {args.study_uid} is not stored") from None
    info = site.tokens.get(args.study_uid)
    site.audit.record("token.link", actor="cli", study_uid=args.study_uid, token_id=info.id if info else None)
    print(link)
    if info is not None:
        state = info.state(site.links.today())
        print(
            f"valid until {info.valid_until.isoformat()}" + ("" if state == "valid" else f" ({state})"), file=sys.stderr
        )
    if args.slip:
        Path(args.slip).write_bytes(site.links.token_slip(args.study_uid, args.paper))
        site.audit.record("token.slip", actor="cli", study_uid=args.study_uid, detail=args.slip)
        print(f"token slip written to {args.slip}", file=sys.stderr)
    return 0


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise InvalidValue("no password on standard input")
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise InvalidValue("no terminal to ask for the password: use --password-stdin")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != first:
        raise InvalidValue("the two passwords differ")
    return first


def cmd_user_add(args: argparse.Namespace, cfg: Config) -> int:
    """Create a staff user of the web UI (the first admin, for one)."""
    site = _site(cfg)
    user = site.users.add(args.name, _password(args), args.role)
    site.audit.record("user.add", actor="cli", detail=f"{user.name} ({user.role})")
    print(f"user {user.name} ({user.role}) created")
    return 0


def cmd_user_password(args: argparse.Namespace, cfg: Config) -> int:
    """Set a staff user's password (a forgotten admin password, for one)."""
    site = _site(cfg)
    user = site.users.by_name(args.name)
    if user is None:
        raise NotFound(f"no user named {args.name!r}")
    site.users.set_password(user.id, _password(args))
    site.audit.record("user.password", actor="cli", detail=user.name)
    print(f"password of {user.name} changed")
    return 0


def cmd_user_disable(args: argparse.Namespace, cfg: Config) -> int:
    """Disable a staff user (no sign-in, sessions end at once) or enable it again."""
    site = _site(cfg)
    user = site.users.by_name(args.name)
    if user is None:
        raise NotFound(f"no user named {args.name!r}")
    site.users.set_disabled(user.id, args.disable)
    verb = "disabled" if args.disable else "enabled"
    site.audit.record(f"user.{'disable' if args.disable else 'enable'}", actor="cli", detail=user.name)
    print(f"user {user.name} {verb}")
    return 0


def cmd_user_list(args: argparse.Namespace, cfg: Config) -> int:
    """List the staff users."""
    users = _site(cfg).users.all()
    if not users:
        print("no users: create the first admin with 'appliance user add NAME --role admin'")
    for user in users:
        print(
            f"{user.name:<24} {user.role:<10} last sign-in {user.last_login or 'never'}"
            + (" (disabled)" if user.disabled else "")
        )
    return 0


def cmd_apikey_add(args: argparse.Namespace, cfg: Config) -> int:
    """Make an API key for a DICOMweb / API client and print it (once: only its hash is kept)."""
    site = _site(cfg)
    key, secret = site.apikeys.add(args.name, args.role, args.days)
    site.audit.record("apikey.add", actor="cli", detail=f"{key.name} ({key.role})")
    print(secret)
    print(
        f"API key {key.name!r} ({key.role}) created"
        + (f", expires {key.expires}" if key.expires else "")
        + "; it is shown only now. Clients send it as 'Authorization: Bearer <key>'.",
        file=sys.stderr,
    )
    return 0


def cmd_apikey_list(args: argparse.Namespace, cfg: Config) -> int:
    """List the API keys (names, roles, states; never the keys)."""
    keys = _site(cfg).apikeys.all(include_revoked=args.all)
    if not keys:
        print("no API keys: make one with 'appliance apikey add NAME --role frontdesk'")
    for key in keys:
        print(
            f"{key.name:<24} {key.role:<10} {key.state():<8} created {key.created}"
            f"{'  expires ' + key.expires if key.expires else ''}  last used {key.last_used or 'never'}"
        )
    return 0


def cmd_apikey_revoke(args: argparse.Namespace, cfg: Config) -> int:
    """Revoke an API key (``master-cookie`` revokes the master cookie)."""
    site = _site(cfg)
    key = site.apikeys.revoke(args.name)
    site.audit.record("apikey.revoke", actor="cli", detail=key.name)
    print(f"API key {key.name!r} revoked")
    return 0


def cmd_apikey_master(args: argparse.Namespace, cfg: Config) -> int:
    """Make the master cookie (the previous one stops working) and print its value once."""
    site = _site(cfg)
    secret = site.apikeys.new_master()
    site.audit.record("apikey.master", actor="cli", detail="new master cookie")
    print(secret)
    hosts = cfg.api.master_cookie_hosts
    if hosts:
        print(
            f"master cookie made; accepted only from: {', '.join(hosts)}. Clients send the cookie "
            "'master_cookie=<value>'.",
            file=sys.stderr,
        )
    else:
        print(
            "WARNING: [api] master_cookie_hosts is empty: the master cookie is accepted from ANY host. "
            "Set it to the integrated hosts' addresses.",
            file=sys.stderr,
        )
    return 0


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``token`` and ``user add|password|list|disable|enable`` to the CLI's subcommands."""
    p = sub.add_parser("token", parents=[common], help="print the patient link of a stored study")
    p.add_argument("study_uid", metavar="STUDY_UID")
    p.add_argument("--regenerate", action="store_true", help="make a new link first (the old one stops working)")
    p.add_argument("--slip", metavar="FILE.pdf", help="also write the patient's token slip (PDF) to this file")
    p.add_argument(
        "--paper", choices=("A4", "Letter", "receipt80"), help="paper of the slip (default: [web] slip_paper)"
    )
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("user", help="staff users of the web UI: add, password, list, disable, enable")
    user_sub = p.add_subparsers(dest="user_command", metavar="USER_COMMAND", required=True)
    q = user_sub.add_parser("add", parents=[common], help="create a web UI user (asks for the password)")
    q.add_argument("name", metavar="NAME")
    q.add_argument("--role", choices=("admin", "frontdesk"), required=True, help="admin or frontdesk")
    q.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input instead of asking",
    )
    q.set_defaults(func=cmd_user_add)
    q = user_sub.add_parser("password", parents=[common], help="set a web UI user's password")
    q.add_argument("name", metavar="NAME")
    q.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    q.set_defaults(func=cmd_user_password)
    q = user_sub.add_parser("list", parents=[common], help="list the web UI users and their roles")
    q.set_defaults(func=cmd_user_list)
    for verb, text in (
        ("disable", "stop a web UI user from signing in and end their sessions now"),
        ("enable", "let a disabled web UI user sign in again"),
    ):
        q = user_sub.add_parser(verb, parents=[common], help=text)
        q.add_argument("name", metavar="NAME")
        q.set_defaults(func=cmd_user_disable, disable=verb == "disable")

    p = sub.add_parser("apikey", help="API keys and the master cookie of DICOMweb and the JSON API")
    key_sub = p.add_subparsers(dest="apikey_command", metavar="APIKEY_COMMAND", required=True)
    q = key_sub.add_parser("add", parents=[common], help="make an API key for a client (printed once)")
    q.add_argument("name", metavar="NAME")
    q.add_argument("--role", choices=("admin", "frontdesk"), required=True, help="admin or frontdesk")
    q.add_argument("--days", type=int, default=0, help="the key expires after this many days (default: never)")
    q.set_defaults(func=cmd_apikey_add)
    q = key_sub.add_parser("list", parents=[common], help="list the API keys (never the keys themselves)")
    q.add_argument("--all", action="store_true", help="include revoked keys")
    q.set_defaults(func=cmd_apikey_list)
    q = key_sub.add_parser("revoke", parents=[common], help="revoke an API key (master-cookie: the master cookie)")
    q.add_argument("name", metavar="NAME")
    q.set_defaults(func=cmd_apikey_revoke)
    q = key_sub.add_parser(
        "master", parents=[common], help="make the master cookie (printed once; replaces the old one)"
    )
    q.set_defaults(func=cmd_apikey_master)
