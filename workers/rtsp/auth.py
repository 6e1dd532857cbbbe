"""RTSP authentication: Basic and Digest (RFC 2617, MD5 and MD5-sess, with or without qop=auth).

Cameras challenge with one or both in WWW-Authenticate; Digest is preferred since Basic sends the
password itself. The credentials come from the source URL, percent-decoded, so a password full of URL
syntax (`p@ss:w/rd%?#1`) reaches the camera as it was typed.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re

PARAM_RE = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_challenges(headers: list[str]) -> dict[str, dict[str, str]]:
    """{"digest": {...params}, "basic": {...}} from every WWW-Authenticate header value."""
    out: dict[str, dict[str, str]] = {}
    for value in headers:
        scheme, _, rest = value.strip().partition(" ")
        params = {}
        for m in PARAM_RE.finditer(rest):
            params[m.group(1).lower()] = m.group(2) if m.group(2) is not None else m.group(3)
        out.setdefault(scheme.lower(), params)
    return out


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()  # noqa: S324 - what RFC 2617 digest is made of


class Authenticator:
    """Answers challenges for one user; keeps the Digest nonce and its count across requests."""

    def __init__(self, user: str, password: str) -> None:
        self.user = user
        self.password = password
        self.scheme = ""
        self.params: dict[str, str] = {}
        self.nc = 0

    def challenge(self, headers: list[str]) -> bool:
        """Take a 401's challenges; False if there is nothing we can answer (or no user to answer with)."""
        found = parse_challenges(headers)
        if not self.user and not self.password:
            return False
        if "digest" in found and found["digest"].get("algorithm", "MD5").upper() in ("MD5", "MD5-SESS"):
            self.scheme, self.params, self.nc = "digest", found["digest"], 0
            return True
        if "basic" in found:
            self.scheme, self.params = "basic", found["basic"]
            return True
        return False

    def header(self, method: str, uri: str) -> str | None:
        """The Authorization value for one request, or None before any challenge."""
        if self.scheme == "basic":
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode("ascii")
            return f"Basic {token}"
        if self.scheme != "digest":
            return None
        p = self.params
        realm, nonce = p.get("realm", ""), p.get("nonce", "")
        algorithm = p.get("algorithm", "")
        ha1 = _md5(f"{self.user}:{realm}:{self.password}")
        qops = [q.strip() for q in p.get("qop", "").split(",") if q.strip()]
        cnonce = os.urandom(8).hex()
        if algorithm.upper() == "MD5-SESS":
            ha1 = _md5(f"{ha1}:{nonce}:{cnonce}")
        ha2 = _md5(f"{method}:{uri}")
        fields = [f'username="{self.user}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"']
        if "auth" in qops:
            self.nc += 1
            nc = f"{self.nc:08x}"
            response = _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
            fields += [f'response="{response}"', "qop=auth", f"nc={nc}", f'cnonce="{cnonce}"']
        else:
            response = _md5(f"{ha1}:{nonce}:{ha2}")
            fields.append(f'response="{response}"')
            if algorithm.upper() == "MD5-SESS":
                fields.append(f'cnonce="{cnonce}"')
        if algorithm:
            fields.append(f"algorithm={algorithm}")
        if "opaque" in p:
            fields.append(f'opaque="{p["opaque"]}"')
        return "Digest " + ", ".join(fields)
