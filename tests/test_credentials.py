"""workers/credentials.py: one meaning of URL userinfo for the registry, ONVIF wiring and ffmpeg's logs."""

from __future__ import annotations

from urllib.parse import quote

from workers.credentials import redact, redact_url, split_credentials, strip_credentials, with_credentials

USER, PASSWORD = "ad min@x", "p@ss:w/rd%?#1"


def test_add_then_split_gives_back_exactly_what_went_in() -> None:
    for base in ("rtsp://10.0.0.1:554/Streaming/101?transport=tcp", "rtsp://[fe80::1]:554/a", "rtmp://Cam.Local/x"):
        url = with_credentials(base, USER, PASSWORD)
        assert PASSWORD not in url and "%40" in url
        assert split_credentials(url) == (base, USER, PASSWORD)
        assert strip_credentials(url) == base
        assert redact_url(url) == base.replace("://", "://***@", 1)


def test_a_raw_at_sign_in_the_password_splits_at_the_last_one() -> None:
    assert split_credentials("rtsp://u:p@ss@host:8554/s") == ("rtsp://host:8554/s", "u", "p@ss")
    assert split_credentials("rtsp://host/s") == ("rtsp://host/s", "", "")


def test_redact_hides_secrets_raw_and_encoded_and_any_userinfo() -> None:
    line = f"[rtsp @ 0x1] method DESCRIBE failed: 401 rtsp://x:{quote(PASSWORD, safe='')}@h/s {PASSWORD} //a:b@c"
    out = redact(line, PASSWORD)
    assert "p@ss" not in out and "p%40ss" not in out and "a:b@" not in out
    assert out.count("***") >= 3 and "rtsp://***@h/s" in out
