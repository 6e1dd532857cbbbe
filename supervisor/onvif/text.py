"""Text hygiene for device answers and exceptions: one line, printable, bounded, no secrets.

Why: device fault strings and library exceptions end up in API answers and log lines; a camera may echo
the URL it was called with (credentials included) or send kilobytes of HTML.
"""

from __future__ import annotations

import re
from urllib.parse import quote


def scrub(text: str, *secrets: str) -> str:
    """Remove every secret (raw and percent-encoded) from a text, e.g. an exception or ffmpeg's stderr."""
    for secret in sorted({s for s in secrets if s and len(s) >= 1}, key=len, reverse=True):
        for form in {secret, quote(secret, safe=""), quote(secret)}:
            text = text.replace(form, "***")
    return re.sub(r"([a-z][a-z0-9+.-]*://)[^/@\s]*@", r"\1***@", text, flags=re.I)


def short(text: str, limit: int = 160) -> str:
    """One printable line of at most `limit` characters."""
    text = re.sub(r"\s+", " ", "".join(c if c.isprintable() else " " for c in text)).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"
