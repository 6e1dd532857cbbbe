"""Text hygiene for device answers and exceptions: one line, printable, bounded.

Why: device fault strings and library exceptions end up in API answers and log lines, and a camera may
send kilobytes of HTML; secrets are removed first, by workers.credentials.redact.
"""

from __future__ import annotations

import re


def short(text: str, limit: int = 160) -> str:
    """One printable line of at most `limit` characters."""
    text = re.sub(r"\s+", " ", "".join(c if c.isprintable() else " " for c in text)).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"
