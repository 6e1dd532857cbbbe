"""RTP depacketizers, parameter-set readers and the fMP4 writer, on packets built here byte by byte.

What must hold: a frame is one sample whatever its slices and repeated parameter sets; boundaries come
from the marker bit or a new timestamp; a lost packet never yields half a picture; what the writer
makes is what the hub's reader (and a real decoder) reads back.
"""

from __future__ import annotations

import base64
import struct
from fractions import Fraction

import av
import pytest

from workers.fmp4 import Splitter, parse_fragment, parse_init, read_traf
from workers.mp4mux import AudioSpec, VideoSpec, fragment, init_segment, length_prefixed
from workers.rtp import h264, h265
from workers.rtp.aac import AacDepacketizer, AdtsReader, asc_info, make_asc
from workers.rtp.packet import RtpPacket, UnsupportedPacketization, parse_rtp
from workers.rtsp.auth import Authenticator, parse_challenges
from workers.rtsp.client import parse_rtp_info, split_url
from workers.rtsp.sdp import control_url, parse_sdp

# x264 Constrained Baseline 1280x720 and its PPS, as the GStreamer test camera sends them
SPS = base64.b64decode("Z0LAH9kAUAW7ARAAAAMAEAAAAwMg8YMkgA==")
PPS = base64.b64decode("aMuDyyA=")


def rtp(seq: int, ts: int, payload: bytes, marker: bool = False, pt: int = 96) -> bytes:
    return struct.pack(">BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts, 1234) + payload


def pkt(seq: int, ts: int, payload: bytes, marker: bool = False) -> RtpPacket:
    p = parse_rtp(rtp(seq, ts, payload, marker))
    assert p is not None
    return p


def fu_a(nal: bytes, size: int) -> list[bytes]:
    head, body = nal[0], nal[1:]
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    out = []
    for i, chunk in enumerate(chunks):
        fu_header = (0x80 if i == 0 else 0) | (0x40 if i == len(chunks) - 1 else 0) | (head & 0x1F)
        out.append(bytes([(head & 0xE0) | 28, fu_header]) + chunk)
    return out


def slice_nal(kind: int, first_mb: int, size: int = 300) -> bytes:
    """A slice NAL whose header codes first_mb_in_slice (ue(v)), then filler."""
    bits = bin(first_mb + 1)[2:]
    code = "0" * (len(bits) - 1) + bits + "1"  # first_mb_in_slice, then slice_type ue(0)
    code += "0" * (-len(code) % 8)
    payload = int(code, 2).to_bytes(len(code) // 8, "big")
    return bytes([0x60 | kind]) + payload + bytes(i % 251 + 1 for i in range(size))


def test_rtp_header_with_csrc_extension_and_padding() -> None:
    raw = struct.pack(">BBHII", 0xB1, 0xE0, 7, 90000, 5) + b"\x00\x00\x00\x09"  # P, X, 1 CSRC, marker
    raw += struct.pack(">HH", 0xBEDE, 1) + b"\x11\x22\x33\x44" + b"payload" + b"\x00\x00\x03"
    p = parse_rtp(raw)
    assert p is not None and p.marker and p.payload_type == 0x60 and p.seq == 7 and p.timestamp == 90000
    assert p.payload == b"payload"
    assert parse_rtp(b"\x40" + b"\x00" * 20) is None  # not version 2


def test_sliced_keyframe_with_repeated_parameter_sets_is_one_access_unit() -> None:
    """GStreamer's x264 (zerolatency, sliced) + payloader: SPS PPS before each slice of a keyframe."""
    d = h264.H264Depacketizer()
    aud = b"\x09\xf0"
    idr0, idr1 = slice_nal(5, 0), slice_nal(5, 1800)
    stap = bytes([24]) + b"".join(len(n).to_bytes(2, "big") + n for n in (aud, SPS, PPS))
    packets = [stap, *fu_a(idr0, 100), bytes([24]) + b"".join(len(n).to_bytes(2, "big") + n for n in (SPS, PPS))]
    packets += fu_a(idr1, 100)
    out = []
    for i, payload in enumerate(packets):
        out += d.push(pkt(100 + i, 3600, payload, marker=i == len(packets) - 1))
    assert len(out) == 1
    au = out[0]
    assert au.keyframe and au.nals == [aud, SPS, PPS, idr0, idr1]
    assert au.params == [SPS, PPS]
    # the next frame: two P slices, single NAL packets, ends at the marker (no waiting for the next frame)
    p0, p1 = slice_nal(1, 0), slice_nal(1, 1800)
    first = d.push(pkt(100 + len(packets), 7200, p0))
    assert first == []
    second = d.push(pkt(101 + len(packets), 7200, p1, marker=True))
    assert len(second) == 1 and second[0].nals == [p0, p1] and not second[0].keyframe


def test_missing_marker_ends_the_frame_at_the_next_timestamp() -> None:
    d = h264.H264Depacketizer()
    idr = slice_nal(5, 0)
    assert d.push(pkt(1, 0, idr)) == []
    out = d.push(pkt(2, 3600, slice_nal(1, 0)))
    assert len(out) == 1 and out[0].timestamp == 0 and out[0].keyframe


def test_lost_packet_drops_frames_until_the_next_keyframe() -> None:
    d = h264.H264Depacketizer()
    frags = fu_a(slice_nal(5, 0, 1000), 200)
    seq = 0
    got = []
    for i, f in enumerate(frags):
        got += d.push(pkt(seq, 0, f, marker=i == len(frags) - 1))
        seq += 1
    assert len(got) == 1
    # frame 2 loses its middle packet: it and the P frame after it are dropped, the keyframe comes through
    frags = fu_a(slice_nal(1, 0, 1000), 200)
    for i, f in enumerate(frags):
        if i != 2:
            got += d.push(pkt(seq, 3600, f, marker=i == len(frags) - 1))
        seq += 1
    got += d.push(pkt(seq, 7200, slice_nal(1, 0), marker=True))
    seq += 1
    got += d.push(pkt(seq, 10800, slice_nal(5, 0), marker=True))
    assert [a.timestamp for a in got] == [0, 10800]
    assert d.lost_packets == 1 and d.dropped_frames == 2


def test_h264_sps_size_and_avcc() -> None:
    assert h264.sps_size(SPS) == (1280, 720)
    record = h264.avcc(SPS, [PPS])
    assert record[:4] == bytes([1, 0x42, 0xC0, 0x1F]) and record[5] == 0xE1


def test_h265_aggregation_and_fragmentation_units() -> None:
    d = h265.H265Depacketizer()
    vps, sps, pps = bytes([0x40, 0x01, 1, 2]), bytes([0x42, 0x01, 3, 4]), bytes([0x44, 0x01, 5])
    idr = bytes([0x26, 0x01]) + bytes(range(200))  # IDR_W_RADL (19)
    ap = bytes([48 << 1, 1]) + b"".join(len(n).to_bytes(2, "big") + n for n in (vps, sps, pps))
    body = idr[2:]
    fus = []
    for i in range(0, len(body), 80):
        s, e = i == 0, i + 80 >= len(body)
        fus.append(bytes([49 << 1, 1, (0x80 if s else 0) | (0x40 if e else 0) | 19]) + body[i : i + 80])
    out = d.push(pkt(1, 0, ap))
    for i, f in enumerate(fus):
        out += d.push(pkt(2 + i, 0, f, marker=i == len(fus) - 1))
    assert len(out) == 1 and out[0].keyframe and out[0].nals == [vps, sps, pps, idr]


def test_aac_au_headers_and_adts() -> None:
    d = AacDepacketizer({"sizelength": "13", "indexlength": "3", "indexdeltalength": "3"})
    aus = [b"\x21" * 30, b"\x22" * 40]
    headers = b"".join((len(a) << 3).to_bytes(2, "big") for a in aus)
    payload = (16 * len(aus)).to_bytes(2, "big") + headers + b"".join(aus)
    frames = d.push(pkt(1, 48000, payload, marker=True))
    assert [(f.timestamp, f.data) for f in frames] == [(48000, aus[0]), (49024, aus[1])]
    assert asc_info(make_asc(2, 48000, 1)) == (2, 48000, 1)
    adts = AdtsReader()
    frame = b"\xab" * 20
    length = 7 + len(frame)
    header = bytes([0xFF, 0xF1, (1 << 6) | (11 << 2), (1 << 6) | (length >> 11), (length >> 3) & 0xFF,
                    ((length & 7) << 5) | 0x1F, 0xFC])  # fmt: skip
    assert adts.feed(header + frame + header[:3]) == [frame] and adts.rate == 8000
    assert adts.config == make_asc(2, 8000, 1)


def test_sdp_and_control_urls() -> None:
    sdp = parse_sdp(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=x\r\na=control:*\r\n"
        "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=framerate:25\r\n"
        "a=fmtp:96 packetization-mode=1;sprop-parameter-sets=Z0LAH9kAUAW7ARAAAAMAEAAAAwMg8YMkgA==,aMuDyyA=\r\n"
        "a=control:stream=0\r\nm=audio 0 RTP/AVP 8\r\na=control:rtsp://cam/x/track2\r\n"
    )
    video, audio = sdp.media
    assert (
        video.encoding == "H264"
        and video.framerate == 25.0
        and video.param_sets("sprop-parameter-sets")
        == [
            SPS,
            PPS,
        ]
    )
    assert audio.encoding == "PCMA" and audio.clock_rate == 8000  # static payload type, no rtpmap
    assert control_url("rtsp://cam:554/live/", video.control) == "rtsp://cam:554/live/stream=0"
    assert control_url("rtsp://cam:554/live", "track1") == "rtsp://cam:554/live/track1"
    assert control_url("rtsp://cam/live/", audio.control) == "rtsp://cam/x/track2"
    assert control_url("rtsp://cam/live/", "*") == "rtsp://cam/live/"


def test_credentials_full_of_url_syntax_and_digest() -> None:
    url, user, password, host, port = split_url("rtsp://ad%3Amin:p%40ss%3Aw%2Frd%25%3F%231@127.0.0.1:8554/h264?x=1")
    assert (url, user, password) == ("rtsp://127.0.0.1:8554/h264?x=1", "ad:min", "p@ss:w/rd%?#1")
    assert (host, port) == ("127.0.0.1", 8554)
    auth = Authenticator("Mufasa", "Circle Of Life")
    assert auth.challenge(['Digest realm="testrealm@host.com", qop="auth", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093"'])
    value = auth.header("GET", "/dir/index.html")
    assert value is not None and "qop=auth" in value and "nc=00000001" in value
    plain = Authenticator("u", "p")
    assert plain.challenge(['Basic realm="cam"']) and plain.header("DESCRIBE", "rtsp://x/") == "Basic dTpw"
    assert parse_challenges(['Digest realm="a", nonce="b"', 'Basic realm="a"']).keys() == {"digest", "basic"}
    assert not Authenticator("", "").challenge(['Basic realm="cam"'])


def test_rfc2617_digest_example() -> None:
    """RFC 2617 §3.5 (qop=auth): the response must be the RFC's, given its cnonce."""
    auth = Authenticator("Mufasa", "Circle Of Life")
    challenge = (
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    auth.challenge([challenge])
    import workers.rtsp.auth as mod

    real = mod.os.urandom
    mod.os.urandom = lambda n: bytes.fromhex("0a4f113b")  # hex "0a4f113b" is the RFC's cnonce
    try:
        value = auth.header("GET", "/dir/index.html")
    finally:
        mod.os.urandom = real
    assert value is not None and 'response="6629fae49393a05397450978507c4ef1"' in value


@pytest.fixture(scope="module")
def encoded() -> list[av.Packet]:
    """Three real H.264 frames (x264 through PyAV), Annex B."""
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = 320, 240, "yuv420p"
    enc.options = {"tune": "zerolatency", "bf": "0", "slices": "2"}
    enc.time_base = Fraction(1, 25)
    packets = []
    for i in range(3):
        frame = av.VideoFrame(320, 240, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes([(i * 40) % 256]) * plane.buffer_size)
        frame.pts = i
        packets += enc.encode(frame)
    packets += enc.encode(None)
    return packets


def annexb(data: bytes) -> list[bytes]:
    parts = data.replace(b"\x00\x00\x00\x01", b"\x00\x00\x01").split(b"\x00\x00\x01")
    return [p.rstrip(b"\x00") for p in parts if p]


def test_written_fmp4_reads_back_and_decodes(encoded: list[av.Packet]) -> None:
    nals = [annexb(bytes(p)) for p in encoded]
    sps = next(n for n in nals[0] if n[0] & 0x1F == 7)
    pps = next(n for n in nals[0] if n[0] & 0x1F == 8)
    width, height = h264.sps_size(sps)
    assert (width, height) == (320, 240)
    video = VideoSpec(b"avc1", h264.avcc(sps, [pps]), width, height)
    init = init_segment(video, AudioSpec(make_asc(2, 8000, 1), 8000, 1))
    info = parse_init(init)
    assert info.mime.startswith('video/mp4; codecs="avc1.') and info.mime.endswith(', mp4a.40.2"')
    stream = init
    for i, units in enumerate(nals):
        frag = fragment(i + 1, 1, i * 3600, 3600, length_prefixed(units), i == 0)
        meta = parse_fragment(frag)
        assert (meta.tfdt, meta.duration, meta.keyframe, meta.samples) == (i * 3600, 3600, i == 0, 1)
        traf = read_traf(frag)
        assert frag[traf.samples[0].offset : traf.samples[0].offset + traf.samples[0].size] == length_prefixed(units)
        stream += frag
    pieces = Splitter().feed(stream)
    assert [k for k, _ in pieces] == ["init"] + ["fragment"] * len(nals)
    import io

    with av.open(io.BytesIO(stream), "r", format="mp4") as container:
        frames = list(container.decode(video=0))
    assert len(frames) == len(nals) and (frames[0].width, frames[0].height) == (320, 240)


def test_rtp_info_matches_streams_by_url_or_order() -> None:
    urls = ["rtsp://cam/live/stream=0", "rtsp://cam/live/stream=1"]
    value = "url=rtsp://cam/live/stream=1;seq=5;rtptime=4294967295, url=stream=0;seq=9;rtptime=100"
    assert parse_rtp_info(value, urls) == {1: 4294967295, 0: 100}
    assert parse_rtp_info("url=x;seq=1;rtptime=7,url=y;seq=2;rtptime=8", urls) == {0: 7, 1: 8}
    assert parse_rtp_info("", urls) == {} and parse_rtp_info("url=a;seq=1", urls) == {}


def test_payload_formats_we_do_not_carry_are_said_so() -> None:
    """STAP-B (H.264) and PACI (H.265) are not ours to guess at: the source is handed to ffmpeg."""
    with pytest.raises(UnsupportedPacketization):
        h264.H264Depacketizer().push(pkt(1, 0, bytes([25, 0, 1]) + b"\x00\x02" + b"\x65\x88", marker=True))
    with pytest.raises(UnsupportedPacketization):
        h265.H265Depacketizer().push(pkt(1, 0, bytes([50 << 1, 1, 0, 0]), marker=True))
