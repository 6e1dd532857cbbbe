"""`h5gate`: serve (the default), set a user's password, print the version."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys

from supervisor.config import load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="h5gate", description="Camera gateway, H5Stream compatible.")
    parser.add_argument("--config", help="TOML settings file")
    parser.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="HTTP port (default 8080)")
    parser.add_argument("--data-dir", help="database, media store and HLS (default: the user data dir)")
    parser.add_argument("--ffmpeg", help="ffmpeg binary to use")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    parser.add_argument("--no-demo", action="store_true", help="do not add the demo source on first start")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the server (default)")
    passwd = sub.add_parser("passwd", help="set a user's password (creates the user if new)")
    passwd.add_argument("user")
    passwd.add_argument("--role", default=None, choices=["Viewer", "Operator", "Administrator"])
    sub.add_parser("version", help="print the version")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "version":
        from supervisor.app import version

        print(version())
        return 0
    if args.command == "passwd":
        return asyncio.run(_passwd(settings, args.user, args.role))
    import uvicorn

    from supervisor.app import create_app
    from supervisor.ws_protocol import media_ws_protocol

    app = create_app(settings)
    # No permessage-deflate: compressing every video fragment for every viewer costs CPU for nothing.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        ws=media_ws_protocol(settings.ws_send_buffer),
        ws_per_message_deflate=False,
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=3,
    )
    return 0


async def _passwd(settings: object, user: str, role: str | None) -> int:
    from supervisor.auth import Auth, User, md5_hex
    from supervisor.db import Database

    password = getpass.getpass(f"new password for {user}: ") if sys.stdin.isatty() else sys.stdin.readline()
    password = password.rstrip("\n")
    if len(password) < 4:
        print("password too short (at least 4 characters)", file=sys.stderr)
        return 2
    db = Database(settings.db_path)  # type: ignore[attr-defined]
    await db.open()
    auth = Auth(db)
    await auth.load()
    existing = auth.users.get(user)
    await auth.save_user(User(user, md5_hex(password), role or (existing.role if existing else "Viewer")))
    await db.close()
    print(f"password of {user} set")
    return 0


if __name__ == "__main__":
    sys.exit(main())
