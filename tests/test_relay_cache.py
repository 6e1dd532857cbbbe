"""HLS and recordings behind an HTTP cache or CDN: Cache-Control, Vary, validators, names never reused.

A shared cache keys on the URL: it may keep an answer only when the URL carries the authority it was
served under (`?session=`, or nothing when anonymous view allows it); an answer authorised by a cookie or
an Authorization header is private. Segment names must never come back with other bytes: across
restarts of the packager, of the source and of the server.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_records import records
from tools.harness.camera import wait_until
from tools.harness.gateway import Gateway

PUBLIC_SEGMENT = "public, max-age=86400, immutable"
PRIVATE_SEGMENT = "private, max-age=86400, immutable"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = Gateway(
        tmp_path_factory.mktemp("cachegw"), extra_args=["--no-demo"], env={"H5GATE_HLS_IDLE_SECONDS": "2"}
    ).start()
    try:
        gateway.ok("AddSrcFile", token="clip", name="Clip", url="demo.mp4")
        gateway.wait_online("clip", timeout=30)
        yield gateway
    finally:
        gateway.stop()


def uris(text: str) -> list[str]:
    """Every URI of a playlist: segment lines, and URI="..." of maps, parts and preload hints."""
    found = [line for line in text.splitlines() if line and not line.startswith("#")]
    found += re.findall(r'URI="([^"]+)"', text)
    return found


def name_of(uri: str) -> str:
    return uri.split("?", 1)[0]


def varies(headers: dict[str, str]) -> bool:
    """Vary names the credentials (CORS may add Origin beside them)."""
    names = {v.strip().lower() for v in headers.get("vary", "").split(",")}
    return {"cookie", "authorization"} <= names


def playlist(gw: Gateway, version: str, headers: dict[str, str] | None = None, query: str = "") -> tuple[dict, str]:
    """The playlist, once the packager has its first segment (a fresh packager answers 503 until then)."""
    deadline = time.monotonic() + 20
    while True:
        status, h, body = gw.request(f"/hls/{version}/clip/hls.m3u8{query}", headers=headers)
        if status != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert status == 200, (status, body[:300])
    return h, body.decode()


def test_hls_headers_follow_where_the_session_came_from(gw: Gateway) -> None:
    session = f"?session={gw.session}"
    for version in ("v2", "v1"):
        h, text = playlist(gw, version, query=session)
        assert h["cache-control"] == "no-cache" and "cookie" not in h.get("vary", "").lower(), h
        listed = [u for u in uris(text) if "PRELOAD" not in u]
        assert listed and all(u.endswith(session) for u in listed), text  # the authority rides in every URI
        kinds = {name_of(u).split("-")[0] for u in listed}
        if version == "v2":
            assert {"init", "seg", "part"} <= kinds, text
        for uri in listed[:6] + [u for u in listed if u.startswith("init")]:
            status, hs, body = gw.request(f"/hls/{version}/clip/{uri}")
            assert status == 200 and body, (uri, status)
            assert hs["cache-control"] == PUBLIC_SEGMENT and "cookie" not in hs.get("vary", "").lower(), (uri, hs)
            again = gw.request(f"/hls/{version}/clip/{uri}")
            assert again[2] == body, f"{uri}: an immutable name answered other bytes"

    for headers in ({"Cookie": f"h5gate_session={gw.session}"}, {"Authorization": f"token {gw.session}"}):
        h, text = playlist(gw, "v2", headers=headers)
        assert h["cache-control"] == "private, no-cache" and varies(h), h
        seg = next(u for u in uris(text) if u.startswith("seg-"))
        assert "session=" not in seg
        status, hs, _ = gw.request(f"/hls/v2/clip/{seg}", headers=headers)
        assert status == 200 and hs["cache-control"] == PRIVATE_SEGMENT and varies(hs)
        status, hs, _ = gw.request(f"/hls/v2/clip/{seg}")  # the same URL without the cookie: refused
        assert status == 401 and hs["cache-control"] == "no-store"


def test_refusals_and_api_answers_are_never_stored(gw: Gateway) -> None:
    h, text = playlist(gw, "v2", query=f"?session={gw.session}")
    seg = name_of(next(u for u in uris(text) if u.startswith("seg-")))
    run, number = re.match(r"seg-([0-9a-f]+)-(\d+)\.m4s", seg).groups()  # type: ignore[union-attr]
    for path, code in (
        (f"/hls/v2/clip/seg-{run}-{int(number) + 50}.m4s?session={gw.session}", 404),  # not made yet
        (f"/hls/v2/clip/seg-{run}-{number}.m4s", 401),  # no session
        (f"/hls/v2/nosuch/hls.m3u8?session={gw.session}", 404),
        (f"/api/v1/GetSrc?session={gw.session}", 200),
        ("/api/v1/GetSrc", 401),
    ):
        status, hs, _ = gw.request(path)
        assert status == code and hs["cache-control"] == "no-store", (path, status, hs)


def test_anonymous_hls_is_public(gw: Gateway) -> None:
    """No credential at all: the URL is the whole key, so a shared cache may keep what anyone may fetch."""
    gw.ok("CreateRole", roletoken="kiosk", role="Viewer")
    gw.ok("AddCamToRole", roletoken="kiosk", camtoken="clip", cam="Clip")
    gw.ok("SetAnonymousView", enable="true", roletoken="kiosk")
    try:
        h, text = playlist(gw, "v2")
        assert h["cache-control"] == "no-cache"
        seg = next(u for u in uris(text) if u.startswith("seg-"))
        assert "session=" not in seg
        status, hs, _ = gw.request(f"/hls/v2/clip/{seg}")
        assert status == 200 and hs["cache-control"] == PUBLIC_SEGMENT
    finally:
        gw.ok("SetAnonymousView", enable="false")
        gw.ok("DeleteRole", roletoken="kiosk")
    status, hs, _ = gw.request(f"/hls/v2/clip/{seg}")
    assert status == 401 and hs["cache-control"] == "no-store"


def collect(gw: Gateway, rounds: int = 3) -> dict[str, set[str]]:
    """Names listed by a few reloads of both playlists (one packager run of each)."""
    names: dict[str, set[str]] = {"v1": set(), "v2": set()}
    for _ in range(rounds):
        for version in names:
            _, text = playlist(gw, version, query=f"?session={gw.session}")
            names[version] |= {name_of(u) for u in uris(text)}
        time.sleep(1.0)
    return names


def wait_hls_stopped(gw: Gateway) -> None:
    """Both packagers reaped (idle 2 s): the v1 folder is gone, and a v2 name of the run answers 404."""
    assert wait_until(lambda: not list((gw.data_dir / "hls" / "v1").rglob("*.ts")), 20, 0.2)
    time.sleep(1.5)


def test_segment_names_never_repeat(gw: Gateway) -> None:
    """Across a packager restart (idle stop), a source restart and a server restart, no name comes back,
    and an old run's name is refused (404, not stored), never answered with another run's bytes."""
    runs = [collect(gw)]
    wait_hls_stopped(gw)
    runs.append(collect(gw))  # a new packager run, moments after the last
    wait_hls_stopped(gw)
    gw.stop()
    gw.start()
    gw.wait_online("clip", timeout=30)
    runs.append(collect(gw))
    for version in ("v1", "v2"):
        for i, a in enumerate(runs):
            assert a[version], f"run {i} listed no {version} names"
            for j, b in enumerate(runs[i + 1 :], i + 1):
                assert not a[version] & b[version], f"{version} names of run {i} came back in run {j}"
    old = sorted(n for n in runs[0]["v2"] if n.startswith("seg-"))[0]
    status, hs, _ = gw.request(f"/hls/v2/clip/{old}?session={gw.session}")
    assert status == 404 and hs["cache-control"] == "no-store"
    old_ts = sorted(runs[0]["v1"])[0]
    status, hs, _ = gw.request(f"/hls/v1/clip/{old_ts}?session={gw.session}")
    assert status == 404 and hs["cache-control"] == "no-store"


def test_recording_files_revalidate_and_never_overrun(gw: Gateway) -> None:
    """A recording: private, no-cache, with ETag and Last-Modified; 304 while unchanged; a file being
    written is sent exactly as long as its Content-Length says, and its validators change as it grows."""
    rec = gw.ok("Record", token="clip", duration=6, filename=f"cache{int(time.time())}")
    url = f"{rec['strPath']}?session={gw.session}"
    assert wait_until(lambda: gw.request(url)[0] == 200, 15, 0.2)
    etags = set()
    growing = time.monotonic() + 4
    while time.monotonic() < growing:
        status, h, body = gw.request(url)
        assert status == 200 and len(body) == int(h["content-length"]), (len(body), h)
        assert h["cache-control"] == "private, no-cache" and varies(h)
        assert h["etag"] and h["last-modified"]
        etags.add(h["etag"])
        time.sleep(0.3)
    assert len(etags) >= 2, "the file grew while recorded: its ETag must change"

    assert wait_until(lambda: rec_closed(gw, rec["strPath"]), 20, 0.5)
    status, h, body = gw.request(url)
    assert status == 200 and body[4:8] == b"ftyp"
    etag, modified = h["etag"], h["last-modified"]
    for cond in ({"If-None-Match": etag}, {"If-None-Match": f'W/{etag}, "x"'}, {"If-Modified-Since": modified}):
        status, h304, body304 = gw.request(url, headers=cond)
        assert status == 304 and body304 == b"" and h304["etag"] == etag, (cond, status, h304)
        assert h304["cache-control"] == "private, no-cache"
    status, _, again = gw.request(url, headers={"If-None-Match": '"stale"'})
    assert status == 200 and again == body
    status, h, part = gw.request(url, headers={"Range": "bytes=0-99"})
    assert status == 206 and part == body[:100] and h["content-range"] == f"bytes 0-99/{len(body)}"
    status, h, _ = gw.request(rec["strPath"])  # no session: refused, and not stored
    assert status == 401 and h["cache-control"] == "no-store"


def rec_closed(gw: Gateway, path: str) -> bool:
    found = records(gw, "clip", time.time() - 120)
    return any(r["strPath"] == path and not r["bRecording"] for r in found)


def test_playlists_of_a_restarted_run_use_new_names(tmp_path: Path, gw: Gateway) -> None:
    """The v2 run id orders runs by the clock and differs between nodes: two servers, same source, same time."""
    other = Gateway(tmp_path / "other", extra_args=["--no-demo"]).start()
    try:
        other.ok("AddSrcFile", token="clip", name="Clip", url="demo.mp4")
        other.wait_online("clip", timeout=30)
        _, mine = playlist(gw, "v2", query=f"?session={gw.session}")
        _, theirs = playlist(other, "v2", query=f"?session={other.session}")
        a = {name_of(u) for u in uris(mine)}
        b = {name_of(u) for u in uris(theirs)}
        assert a and b and not a & b, "two nodes packaging the same camera must not share a segment name"
    finally:
        other.stop()
