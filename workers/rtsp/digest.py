"""The server side of RTSP Digest authentication (RFC 2617, MD5, with or without qop=auth).

Nonces are stateless: a time stamp and an HMAC of it under a key made at start-up, so the server keeps no
table of nonces a client flood could grow, and a nonce is good for NONCE_SECONDS. The check needs only the
user's HA1 = MD5(user:realm:password), which the supervisor keeps (supervisor/digest_keys.py): the
password itself is never needed here.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time

from workers.rtsp.auth import PARAM_RE

NONCE_SECONDS = 600.0


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()  # noqa: S324 - what RFC 2617 digest is made of


def ha1(user: str, realm: str, password: str) -> str:
    return md5_hex(f"{user}:{realm}:{password}")


def parse_params(value: str) -> dict[str, str]:
    """The name=value pairs of an Authorization header after its scheme."""
    return {
        m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3)) for m in PARAM_RE.finditer(value)
    }


class DigestGuard:
    def __init__(self, realm: str) -> None:
        self.realm = realm
        self._key = os.urandom(32)

    def nonce(self) -> str:
        stamp = f"{int(time.time()):x}"
        mac = hmac.new(self._key, stamp.encode(), hashlib.sha256).hexdigest()[:24]
        return stamp + mac

    def fresh(self, nonce: str) -> bool:
        stamp, mac = nonce[:-24], nonce[-24:]
        if not stamp or len(nonce) > 64:
            return False
        good = hmac.new(self._key, stamp.encode(), hashlib.sha256).hexdigest()[:24]
        if not hmac.compare_digest(mac, good):
            return False
        try:
            return time.time() - int(stamp, 16) < NONCE_SECONDS
        except ValueError:
            return False

    def challenge(self) -> str:
        return f'Digest realm="{self.realm}", nonce="{self.nonce()}", algorithm=MD5'

    def verify(self, params: dict[str, str], method: str, user_ha1: str) -> bool:
        """Whether a Digest answer (already matched to a user with this HA1) is right for this request."""
        nonce, uri, response = params.get("nonce", ""), params.get("uri", ""), params.get("response", "")
        if params.get("realm") != self.realm or not self.fresh(nonce):
            return False
        if params.get("algorithm", "MD5").upper() != "MD5":
            return False
        ha2 = md5_hex(f"{method}:{uri}")
        qop = params.get("qop", "")
        if qop:
            if qop != "auth":
                return False
            expected = md5_hex(f"{user_ha1}:{nonce}:{params.get('nc', '')}:{params.get('cnonce', '')}:auth:{ha2}")
        else:
            expected = md5_hex(f"{user_ha1}:{nonce}:{ha2}")
        return hmac.compare_digest(expected, response.lower())
