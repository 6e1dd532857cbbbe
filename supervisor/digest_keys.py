"""Digest keys: each user's HA1 = MD5(user:realm:password), what RTSP Digest authentication checks against.

Users' passwords are stored as the vendor's MD5(password) (or a hash of it), from which HA1 cannot be
derived: it needs the password itself. So an HA1 is learnt whenever the password is seen in plain text,
and only then: `h5gate passwd`, a Login with the plain password (the manual's own example; the consoles
send the MD5), and an RTSP Basic login over loopback. A key is stored with the stored password it was
made under and is used only while that is still the user's password: a change by any path (UpdateUser,
which only ever sees an MD5) makes the key stale at once, with no hook in every place a password changes.
Until a user's key is learnt again, Digest refuses them and the log says why.

The realm is fixed (REALM): an HA1 is bound to it, and a changed realm would void every key.
"""

from __future__ import annotations

import logging

from supervisor.auth import User
from supervisor.db import Database
from workers.rtsp.digest import ha1

log = logging.getLogger("h5gate.auth")

REALM = "h5gate"


class DigestKeys:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def learn(self, user: User, password: str) -> None:
        """Keep the HA1 of a password just proven right for `user` (as the user is stored now)."""
        key = ha1(user.name, REALM, password)
        row = await self.db.fetchone("SELECT ha1, password FROM digest_keys WHERE name = ?", (user.name,))
        if row is not None and row["ha1"] == key and row["password"] == user.password_md5:
            return
        await self.db.execute(
            "INSERT INTO digest_keys (name, ha1, password) VALUES (?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET ha1 = excluded.ha1, password = excluded.password",
            (user.name, key, user.password_md5),
        )
        log.info("digest key of %s stored (RTSP Digest login)", user.name)

    async def ha1(self, user: User) -> str | None:
        """The user's HA1 if it was made under their current password."""
        row = await self.db.fetchone("SELECT ha1, password FROM digest_keys WHERE name = ?", (user.name,))
        if row is None or row["password"] != user.password_md5:
            return None
        return str(row["ha1"])
