"""`h5gate`: serve (the default), set a user's password, print the version.

Every mistake a user can make on the command line or in the settings ends in one line on stderr and exit
code 2, never a traceback: the first minutes with a program are spent on exactly these mistakes.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import socket
import sys
from typing import Any, NoReturn

import uvicorn

from supervisor.config import ConfigError, Settings, load_settings
from supervisor.version import version

log = logging.getLogger("h5gate")

EXIT_USAGE = 2  # bad flags or settings
EXIT_RUNTIME = 1  # the server could not start (port in use, data dir not writable)


class _Parser(argparse.ArgumentParser):
    """argparse prints its usage block before the error; one line is what a user (and a log) can read."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see h5gate --help)\n")


def _add_settings_flags(parser: argparse.ArgumentParser, default: Any) -> None:
    """The settings flags, on the main parser and again on `serve`/`passwd` so they work after the command.

    The copies on subcommands default to SUPPRESS: otherwise a subparser's defaults would overwrite what was
    given before the command (`h5gate --port 81 serve` would lose the port).
    """
    parser.add_argument("--config", default=default, help="TOML settings file")
    parser.add_argument("--host", default=default, help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", default=default, help="HTTP port, 1-65535 (default 8080)")
    parser.add_argument("--data-dir", default=default, help="database, media store and HLS (default: user data dir)")
    parser.add_argument("--ffmpeg", default=default, help="ffmpeg binary to use")
    parser.add_argument("--log-level", default=default, help="DEBUG, INFO, WARNING or ERROR")
    parser.add_argument(
        "--no-demo",
        action="store_true",
        default=default if default is argparse.SUPPRESS else False,
        help="do not add the demo source on first start",
    )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="h5gate", description="Camera gateway, H5Stream compatible.")
    parser.add_argument("--version", action="version", version=f"h5gate {version()}")
    _add_settings_flags(parser, None)
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    serve = sub.add_parser("serve", help="run the server (default)")
    _add_settings_flags(serve, argparse.SUPPRESS)
    passwd = sub.add_parser("passwd", help="set a user's password (creates the user if new)")
    passwd.add_argument("user")
    passwd.add_argument("--role", default=None, choices=["Viewer", "Operator", "Administrator"])
    _add_settings_flags(passwd, argparse.SUPPRESS)
    sub.add_parser("version", help="print the version")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(version())
        return 0
    try:
        settings = load_settings(
            args.config,
            {
                "host": args.host,
                "port": args.port,
                "data_dir": args.data_dir,
                "ffmpeg": args.ffmpeg,
                "log_level": args.log_level,
                "demo_source": False if args.no_demo else None,
            },
        )
    except ConfigError as e:
        print(f"h5gate: config error: {e}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "passwd":
        return asyncio.run(_passwd(settings, args.user, args.role))
    return serve(settings)


def bind(host: str, port: int) -> socket.socket:
    """Bind and listen before anything starts, so a port in use is one clear line and nothing else runs."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def serve(settings: Settings) -> int:
    from supervisor.app import create_app
    from supervisor.connections import uvicorn_options
    from supervisor.restart import Restarter

    restarter = Restarter()
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"h5gate: cannot use data dir {settings.data_dir}: {e.strerror or e}", file=sys.stderr)
        return EXIT_RUNTIME
    try:
        sock = bind(settings.host, settings.port)
    except OSError as e:
        print(f"h5gate: cannot listen on {settings.host}:{settings.port}: {e.strerror or e}", file=sys.stderr)
        return EXIT_RUNTIME
    https = https_listener(settings)  # before the app: the stored console settings may change the web root
    app = create_app(settings, restarter)
    common: dict[str, Any] = {
        "host": settings.host,
        # No permessage-deflate: compressing every video fragment for every viewer costs CPU for nothing.
        "ws_per_message_deflate": False,
        "log_level": settings.log_level.lower(),
        "access_log": False,
        "timeout_graceful_shutdown": 3,
        # protocols with request deadlines and one per-client cap for both listeners; trusted proxies only
        **uvicorn_options(settings),
    }
    plain: Any = app
    if https is not None and (settings.http_redirect or https_forced(settings)):
        from supervisor.https_redirect import HttpsRedirect

        plain = HttpsRedirect(app, https[0])
        log.info("the plain port redirects to HTTPS on port %d", https[0])
    server = _Server(uvicorn.Config(plain, port=settings.port, **common), settings)
    restarter.shutdown = lambda: setattr(server, "should_exit", True)
    extra: list[tuple[uvicorn.Server, socket.socket]] = []
    if https is not None:
        port, cert = https
        try:
            tls_sock = bind(settings.host, port)
        except OSError as e:
            print(f"h5gate: cannot listen on {settings.host}:{port} (HTTPS): {e.strerror or e}", file=sys.stderr)
            return EXIT_RUNTIME
        # the same app on a TLS socket; its lifespan runs once, with the HTTP server
        tls = uvicorn.Config(app, port=port, ssl_certfile=str(cert), lifespan="off", **common)
        extra.append((uvicorn.Server(tls), tls_sock))
        log.info("HTTPS on port %d with %s", port, cert)

    async def serve_all() -> None:
        main = asyncio.create_task(server.serve(sockets=[sock]))
        others = [asyncio.create_task(s.serve(sockets=[k])) for s, k in extra]
        await main
        for s, _ in extra:  # the HTTP server carries the lifespan: when it stops, everything stops
            s.should_exit = True
        await asyncio.gather(*others, return_exceptions=True)

    with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:  # uvloop where installed
        runner.run(serve_all())
    restarter.exec_if_requested()  # Restart (or a configuration restore) asked for a fresh start
    return 0 if server.started else EXIT_RUNTIME


def _stored_http_conf(settings: Settings) -> dict[str, Any]:
    """The consoles' SetHTTPConf values, read straight from the database before the app opens it."""
    import json
    import sqlite3

    try:
        conn = sqlite3.connect(f"file:{settings.db_path}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT value FROM conf WHERE name = 'http'").fetchone()
        finally:
            conn.close()
        stored = json.loads(row[0]) if row else {}
    except (sqlite3.Error, ValueError):
        stored = {}
    return stored if isinstance(stored, dict) else {}


def https_forced(settings: Settings) -> bool:
    """The consoles' "force HTTPS" (bForceHTTPS) asks for the same redirect as the setting http_redirect."""
    return bool(_stored_http_conf(settings).get("bForceHTTPS"))


def https_listener(settings: Settings) -> tuple[int, Any] | None:
    """(port, PEM file) for HTTPS from the settings or, where set, the console's SetHTTPConf; None if off.

    The console's values are read straight from the database, before the app opens it. Its document
    root becomes the web root.
    """
    from supervisor.console_conf import check_certificate

    port, cert = settings.https_port, settings.https_cert
    stored = _stored_http_conf(settings)
    if stored:
        port = int(stored.get("nHTTPSPort") or 0)
        cert = stored.get("strSSLCertificateFile") or cert
        if stored.get("strDocumentRoot"):
            settings.web_root = stored["strDocumentRoot"]
    if not port:
        return None
    try:
        return port, check_certificate(settings, cert or "server.pem")
    except Exception as e:
        log.error("HTTPS not started: %s", e)
        return None


class _Server(uvicorn.Server):
    """uvicorn's Server, saying "listening" only once the app has started and the socket accepts connections."""

    def __init__(self, config: uvicorn.Config, settings: Settings) -> None:
        super().__init__(config)
        self.settings = settings

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            s = self.settings
            host = f"[{s.host}]" if ":" in s.host else s.host
            log.info("h5gate %s listening on http://%s:%d, data in %s", version(), host, s.port, s.data_dir)


async def _passwd(settings: Settings, user: str, role: str | None) -> int:
    from supervisor.auth import Auth, User, md5_hex
    from supervisor.db import Database
    from supervisor.digest_keys import DigestKeys

    password = getpass.getpass(f"new password for {user}: ") if sys.stdin.isatty() else sys.stdin.readline()
    password = password.rstrip("\n")
    if len(password) < 4:
        print("password too short (at least 4 characters)", file=sys.stderr)
        return 2
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_path)
    await db.open()
    auth = Auth(db)
    await auth.load()
    existing = auth.users.get(user)
    await auth.save_user(User(user, md5_hex(password), role or (existing.role if existing else "Viewer")))
    await DigestKeys(db).learn(auth.users[user], password)  # the one moment the plain password is known
    await db.close()
    print(f"password of {user} set")
    return 0


if __name__ == "__main__":
    sys.exit(main())
