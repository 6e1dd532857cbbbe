"""URL credentials, with one meaning everywhere: add, strip, split and redact the userinfo of a URL.

The gateway stores a camera's user and password apart from its URL (so GetSrc and the logs never show
them) and puts them back into the URL only for the one program that needs them, ffmpeg. Userinfo is
percent-encoded (RFC 3986), so '@', ':', '/', '%', '?' and '#' in a password are never read as URL
syntax; ffmpeg URL-decodes the userinfo before it authenticates. The netloc is always split at its
LAST '@' (a password may hold a raw '@'), and the host part is kept verbatim (IPv6 brackets, case, port).

Here in workers/ because both planes need it: the ffmpeg worker redacts its stderr, the supervisor's
registry and ONVIF wiring add and strip credentials.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

# scheme://userinfo@ or a bare //userinfo@ (as ffmpeg prints some URLs): userinfo to hide in free text
USERINFO_RE = re.compile(r"((?:[a-z][a-z0-9+.-]*:)?//)[^/@\s]*@", re.I)
# Query parameters that carry a secret (Dahua's ?user=&password=, Axis' &pwd=, tokens, keys, signatures):
# a name that contains one of these words. Cameras need them in the URL, so they are kept there and
# hidden wherever the URL is shown (GetSrc to non-administrators, the logs, ffmpeg's stderr).
SECRET_PARAM_RE = re.compile(r"pass|pwd|secret|token|key|auth|sig|^pw$|^psw$", re.I)
# name=value of such a parameter inside free text (a log line, ffmpeg's stderr)
SECRET_PAIR_RE = re.compile(
    r"([?&;]([A-Za-z0-9_.\-]*(?:pass|pwd|secret|token|key|auth|sig)[A-Za-z0-9_.\-]*|pw|psw)=)[^&\s\"']*", re.I
)


def _split_netloc(netloc: str) -> tuple[str, str]:
    """'user:pw@host:port' -> ('user:pw', 'host:port')."""
    userinfo, at, hostport = netloc.rpartition("@")
    return (userinfo if at else ""), hostport


def with_credentials(url: str, user: str, password: str) -> str:
    """The URL with user/password percent-encoded into it, replacing any it had; unchanged without a user."""
    if not user:
        return url
    parts = urlsplit(url)
    _, hostport = _split_netloc(parts.netloc)
    userinfo = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{hostport}"))


def strip_credentials(url: str) -> str:
    """The URL without any userinfo: what GetSrc and the logs may show."""
    return split_credentials(url)[0]


def split_credentials(url: str) -> tuple[str, str, str]:
    """(URL without userinfo, user, password), the last two decoded: credentials are stored apart."""
    parts = urlsplit(url)
    userinfo, hostport = _split_netloc(parts.netloc)
    if not userinfo:
        return url, "", ""
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=hostport)), unquote(user), unquote(password)


def redact_url(url: str) -> str:
    """scheme://***@host/...?password=*** : shows that a URL carries credentials without showing them."""
    parts = urlsplit(url)
    userinfo, hostport = _split_netloc(parts.netloc)
    if userinfo:
        parts = parts._replace(netloc=f"***@{hostport}")
    return urlunsplit(parts._replace(query=redact_query(parts.query)))


def redact_query(query: str) -> str:
    """A query string with the value of every secret-carrying parameter replaced by ***, order kept."""
    if not query:
        return query
    out = []
    for item in query.split("&"):
        name, eq, _ = item.partition("=")
        out.append(f"{name}=***" if eq and SECRET_PARAM_RE.search(unquote(name)) else item)
    return "&".join(out)


def query_secrets(url: str) -> list[str]:
    """The values of the URL's secret-carrying query parameters (for redacting them from free text)."""
    pairs = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    return [value for name, value in pairs if value and SECRET_PARAM_RE.search(name)]


def redact(text: str, *secrets: str) -> str:
    """Free text (a log line, ffmpeg's stderr, an exception) with every secret and any URL userinfo as ***.

    Each secret is replaced raw and percent-encoded (both ways a URL may carry it), longest first so a
    secret that contains another is not left half-shown.
    """
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        for form in {secret, quote(secret, safe=""), quote(secret)}:
            text = text.replace(form, "***")
    text = SECRET_PAIR_RE.sub(r"\1***", text)
    return USERINFO_RE.sub(r"\1***@", text)
