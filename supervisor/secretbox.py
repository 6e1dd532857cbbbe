"""Camera secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) with a key file in the data directory.

A source's password, and a URL that carries a password in its query string, are encrypted in the
database; the key lives beside it in `secret.key` (mode 0600, made on first use). A copy of the
database alone (a backup, a support bundle) then shows no camera password. Whoever can read the data
directory can still read both: the key only moves the secret out of the file that travels most.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from workers.credentials import query_secrets

log = logging.getLogger("h5gate.secretbox")

MARK = "enc:v1:"  # the prefix of an encrypted value inside a stored config
SECRET_FIELDS = ("password",)  # always encrypted when not empty
URL_FIELDS = ("url", "url_sub", "snapshot_url")  # encrypted when their query string carries a secret


def _load_key(path: Path) -> bytes:
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    key = Fernet.generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    log.info("made a new key for camera secrets: %s", path)
    return key


class SecretBox:
    def __init__(self, key_path: Path) -> None:
        self.fernet = Fernet(_load_key(key_path))

    def seal(self, value: str) -> str:
        return MARK + self.fernet.encrypt(value.encode("utf-8")).decode("ascii")

    def open(self, value: str) -> str:
        if not value.startswith(MARK):
            return value
        try:
            return self.fernet.decrypt(value[len(MARK) :].encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise ValueError("a stored secret does not decrypt with this data directory's key") from None

    def seal_config(self, text: str) -> str:
        """A source's JSON config with its secrets encrypted."""
        data: dict[str, Any] = json.loads(text)
        for name in SECRET_FIELDS:
            if data.get(name):
                data[name] = self.seal(data[name])
        for name in URL_FIELDS:
            if data.get(name) and query_secrets(data[name]):
                data[name] = self.seal(data[name])
        return json.dumps(data)

    def open_config(self, text: str) -> tuple[str, bool]:
        """(the JSON config with secrets decrypted, whether it held a secret in plain text)."""
        data: dict[str, Any] = json.loads(text)
        plain = False
        for name in (*SECRET_FIELDS, *URL_FIELDS):
            value = data.get(name)
            if not isinstance(value, str) or not value:
                continue
            if value.startswith(MARK):
                data[name] = self.open(value)
            elif name in SECRET_FIELDS or query_secrets(value):
                plain = True
        return json.dumps(data), plain
