"""Domain errors: what the control plane says when it will not or cannot do something.

Domain code (registry, recordings, ONVIF wiring ...) raises these and knows nothing of HTTP; each carries
the human message clients show as strCode. `supervisor.api.common.endpoint()` turns each family into
one HTTP answer, in one table (`api.common.STATUS`), so a family means the same status everywhere.
"""

from __future__ import annotations

__all__ = [
    "BadValue",
    "Busy",
    "Conflict",
    "DeviceError",
    "DeviceRefused",
    "DeviceTimeout",
    "DomainError",
    "Forbidden",
    "Misconfigured",
    "NotFound",
    "StorageError",
    "Unavailable",
]


class DomainError(Exception):
    """Something the server will not or cannot do; `message` is what the client is shown."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadValue(DomainError, ValueError):
    """A value that is wrong as given (a URL, time, name, schedule); a ValueError too, as parsers raise."""


class NotFound(DomainError):
    """The thing named (a source, user, recording, archive) does not exist."""


class Conflict(DomainError):
    """The request clashes with what exists (a token already taken, a name used up, a job in progress)."""


class Busy(DomainError):
    """A limit on concurrent work is reached (recordings per source); the same request may work later."""


class Forbidden(DomainError):
    """The user is known but may not do this (another user's password, a wrong old password)."""


class Unavailable(DomainError):
    """The thing exists but cannot serve now (a source offline, a picture that will not decode)."""


class StorageError(DomainError):
    """The media store could not take what was to be written (disk full, permissions)."""


class DeviceError(DomainError):
    """A camera or other device failed: unreachable, or its answer made no sense."""


class DeviceTimeout(DeviceError):
    """A device did not answer in time."""


class DeviceRefused(DeviceError):
    """A device answered and said no: wrong login, an unsupported feature, a SOAP fault."""


class Misconfigured(DomainError):
    """This server's own settings are wrong (not the request); the log says which setting."""
