"""Users' passwords at rest: a salted, slow hash (scrypt) of the MD5 the login protocol sends.

The H5Stream consoles send the lower-case hex MD5 of the password (and the manual's examples send the
password itself), so the MD5 is what a client proves it knows: that protocol stays. What changes is what
the database keeps. It used to be that MD5, unsalted, which the login accepted as the password, so a copy
of the database was a copy of every login. Now it keeps scrypt(MD5, salt): a stolen database gives
neither a login (the stored string is not accepted as a password) nor, cheaply, the MD5 behind it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

MD5_RE = re.compile(r"^[0-9a-fA-F]{32}$")
# scrypt cost: about 16 MB and some tens of milliseconds a check; logins are rare, guessing must not be
N, R, P = 2**14, 8, 1
PREFIX = "scrypt"


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(md5: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(md5.lower().encode("ascii"), salt=salt, n=n, r=r, p=p, maxmem=64 * 2**20, dklen=32)


def hash_md5(md5: str) -> str:
    """The stored form of a password given as its MD5: scrypt$N$r$p$salt$hash."""
    salt = secrets.token_bytes(16)
    return f"{PREFIX}${N}${R}${P}${_b64(salt)}${_b64(_scrypt(md5, salt, N, R, P))}"


def is_hashed(stored: str) -> bool:
    return stored.startswith(PREFIX + "$")


def candidates(given: str) -> list[str]:
    """The MD5s a login value may stand for: itself when it looks like one, and the MD5 of it as text."""
    out = [given.lower()] if MD5_RE.match(given) else []
    out.append(md5_hex(given))
    return out


def matches_md5(stored: str, md5: str) -> bool:
    """Whether `md5` is the MD5 behind `stored` (blocking: run it in a thread)."""
    if not is_hashed(stored):  # a row from before hashing that load() has not migrated yet
        return MD5_RE.match(stored) is not None and hmac.compare_digest(stored.lower(), md5.lower())
    try:
        _, n, r, p, salt, digest = stored.split("$")
        want = base64.b64decode(digest)
        got = _scrypt(md5, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def verify(stored: str, given: str) -> bool:
    """Whether a login value (the password or its MD5) is right for the stored form (blocking)."""
    return any(matches_md5(stored, md5) for md5 in candidates(given))
