"""The few ways a device operation fails, each with a fixed message that is safe to show and to log.

Why: a camera that refuses logins or answers garbage must become one readable sentence with no
credentials in it, whatever zeep, aiohttp or the onvif library raised underneath (`session.translate`
does that mapping). `fatal` says whether the cached login is still trustworthy; the HTTP answer for each
kind is the API's business (supervisor/api/onvif.py), not the client's.
"""

from __future__ import annotations


class OnvifError(Exception):
    """A device operation that failed; `message` is safe to show to users (no credentials)."""

    fatal = True  # the cached login is dropped: the next call reconnects
    default = "ONVIF error"

    def __init__(self, message: str = "") -> None:
        self.message = message or self.default
        super().__init__(self.message)


class DeviceUnreachable(OnvifError):
    default = "can't connect device"


class DeviceTimeout(OnvifError):
    default = "the device did not answer in time"


class DeviceAuthError(OnvifError):
    default = "login failed: wrong user name or password"


class DeviceBadAnswer(OnvifError):
    default = "the device gave an invalid ONVIF answer"


class DeviceRefused(OnvifError):
    """The device understood the request and said no (SOAP fault): the connection itself is fine."""

    fatal = False
    default = "the device refused the request"


class NotSupported(OnvifError):
    fatal = False
    default = "the device does not support this"
