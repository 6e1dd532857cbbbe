#!/usr/bin/python3
"""Live RTSP test camera on 127.0.0.1, built on GStreamer's gst-rtsp-server.

Run with Debian's /usr/bin/python3 (the only interpreter that can import ``gi``).
The test-suite and the latency benchmark need a *real* RTSP server that behaves like
an IP camera (live, shared media, TCP and UDP, optional auth), not a file replay.

Every video frame differs from the previous one (moving ball + running-time overlay),
so frames can be matched by hash end to end.

Mounts: /h264 (+AAC), /h264_pcma, /h264_pcmu, /h264_noaudio, /h264_sliced (4 slices a frame, SPS/PPS
before each keyframe slice, as many IP cameras send it), /h265 (+AAC), /mjpeg.
With --backchannel-dir the server is GStreamer's ONVIF server and adds /backchannel (H.264 + an ONVIF audio
back-channel, PCMU, for clients that send `Require: www.onvif.org/ver20/backchannel`) and /backchannel_pcma
(the same with PCMA): what a client sends there is written, as the G.711 bytes that arrived, appended to
<dir>/backchannel.ulaw and <dir>/backchannel_pcma.alaw (a camera's speaker, recorded).
Prints ``READY rtsp://127.0.0.1:<port>`` once listening; exits 0 on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

HOST = "127.0.0.1"
MOUNTS = ("h264", "h264_pcma", "h264_pcmu", "h264_noaudio", "h264_sliced", "h265", "mjpeg")
# Server-side RTP/RTCP UDP ports come from this loopback-only pool; without a pool
# gst-rtsp-server binds its UDP sockets to the wildcard address.
UDP_PORT_MIN = 20000
UDP_PORT_MAX = 29999
REQUIRED = tuple(
    "videotestsrc audiotestsrc x264enc x265enc jpegenc alawenc mulawenc h264parse h265parse aacparse"
    " rtph264pay rtph265pay rtpjpegpay rtpmp4gpay rtppcmapay rtppcmupay".split()
)


def _have(element: str) -> bool:
    return Gst.ElementFactory.find(element) is not None


def _require(*elements: str) -> None:
    """Fail early with a clear message instead of a cryptic launch error per client."""
    missing = [e for e in elements if not _have(e)]
    if missing:
        sys.exit(f"gst_camera: missing GStreamer elements: {', '.join(missing)}")


def _aac_encoder() -> str:
    for enc in ("avenc_aac", "voaacenc", "fdkaacenc"):
        if _have(enc):
            return enc
    sys.exit("gst_camera: no AAC encoder (install gstreamer1.0-libav or gstreamer1.0-plugins-bad)")


def _video_src(a: argparse.Namespace, fmt: str = "I420") -> str:
    """Moving ball plus running-time text: consecutive frames never hash-equal."""
    caps = f"video/x-raw,format={fmt},width={a.width},height={a.height},framerate={a.fps}/1"
    src = f"videotestsrc is-live=true pattern=ball ! {caps}"
    if _have("timeoverlay"):
        # timeoverlay (pango) lives in gstreamer1.0-x; the ball alone still changes every frame.
        src += ' ! timeoverlay halignment=left valignment=top font-desc="Sans 24" ! videoconvert'
    return src + f" ! {caps}"


def _h264(a: argparse.Namespace) -> str:
    # Constrained Baseline (what ultrafast emits anyway), no B-frames: any MSE player takes it
    # and decode order == display order.
    return (
        f"{_video_src(a)} ! queue max-size-buffers=4 leaky=downstream"
        f" ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={a.gop} bframes=0"
        f" bitrate={a.bitrate} byte-stream=true threads=1"
        " ! video/x-h264,profile=constrained-baseline,stream-format=byte-stream"
        " ! h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 config-interval=-1"
    )


def _h264_sliced(a: argparse.Namespace) -> str:
    """x264 zerolatency with its frame split into slices (what sliced threads do on a multi-core camera);
    the parser hands the payloader one NAL unit at a time, so SPS/PPS go out before every IDR slice."""
    return (
        f"{_video_src(a)} ! queue max-size-buffers=4 leaky=downstream"
        f" ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={a.gop} bframes=0"
        f' bitrate={a.bitrate} byte-stream=true threads=1 option-string="slices=4"'
        " ! video/x-h264,profile=constrained-baseline,stream-format=byte-stream"
        " ! h264parse config-interval=-1 ! video/x-h264,alignment=nal"
        " ! rtph264pay name=pay0 pt=96 config-interval=-1"
    )


def _h265(a: argparse.Namespace) -> str:
    return (
        f"{_video_src(a)} ! queue max-size-buffers=4 leaky=downstream"
        f" ! x265enc tune=zerolatency speed-preset=ultrafast key-int-max={a.gop} bitrate={a.bitrate}"
        ' option-string="bframes=0:repeat-headers=1"'
        " ! video/x-h265,stream-format=byte-stream"
        " ! h265parse config-interval=-1 ! rtph265pay name=pay0 pt=96 config-interval=-1"
    )


def _mjpeg(a: argparse.Namespace) -> str:
    queue = "queue max-size-buffers=4 leaky=downstream"
    return f"{_video_src(a)} ! {queue} ! jpegenc quality=80 ! rtpjpegpay name=pay0 pt=26"


def _audio_src(rate: int) -> str:
    # 20 ms buffers so PCM payloaders emit camera-like packet sizes.
    return (
        f"audiotestsrc is-live=true wave=sine freq=440 samplesperbuffer={rate // 50}"
        f" ! audioconvert ! audioresample ! audio/x-raw,rate={rate},channels=1"
    )


def _aac() -> str:
    encoder = f"{_aac_encoder()} bitrate=64000"
    return f"{_audio_src(48000)} ! queue ! {encoder} ! aacparse ! rtpmp4gpay name=pay1 pt=97"


def pipelines(a: argparse.Namespace) -> dict[str, str]:
    """Launch lines per mount; payloaders are pay0 (video) and pay1 (audio)."""
    return {
        "h264": f"{_h264(a)} {_aac()}",
        "h264_pcma": f"{_h264(a)} {_audio_src(8000)} ! alawenc ! rtppcmapay name=pay1 pt=8",
        "h264_pcmu": f"{_h264(a)} {_audio_src(8000)} ! mulawenc ! rtppcmupay name=pay1 pt=0",
        "h264_noaudio": _h264(a),
        "h264_sliced": _h264_sliced(a),
        "h265": f"{_h265(a)} {_aac()}",
        "mjpeg": _mjpeg(a),
    }


BACKCHANNELS = {  # mount: (payload type, encoding, depayloader, file)
    "backchannel": (0, "PCMU", "rtppcmudepay", "backchannel.ulaw"),
    "backchannel_pcma": (8, "PCMA", "rtppcmadepay", "backchannel_pcma.alaw"),
}


def _backchannel_factory(
    a: argparse.Namespace, mount: str, pool: GstRtspServer.RTSPAddressPool
) -> GstRtspServer.RTSPOnvifMediaFactory:
    """An ONVIF media factory whose back-channel writes the G.711 payloads it receives to a file, unbuffered."""
    payload, encoding, depay, name = BACKCHANNELS[mount]
    factory = GstRtspServer.RTSPOnvifMediaFactory()
    factory.set_launch(f"( {_h264(a)} )")
    caps = f"application/x-rtp, media=audio, payload={payload}, clock-rate=8000, encoding-name={encoding}"
    location = f"{a.backchannel_dir}/{name}"
    factory.set_backchannel_launch(
        f'( capsfilter caps="{caps}" name=depay_backchannel ! {depay}'
        f" ! filesink location={location} append=true buffer-mode=unbuffered sync=false async=false )"
    )
    factory.set_media_gtype(GstRtspServer.RTSPOnvifMedia.__gtype__)  # the media that can hold a back-channel
    factory.set_shared(False)  # one back-channel per client, like a camera's single speaker session
    factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP | GstRtsp.RTSPLowerTrans.UDP)
    factory.set_address_pool(pool)
    factory.set_latency(0)
    return factory


def _setup_auth(server: GstRtspServer.RTSPServer, user: str, password: str, method: str) -> None:
    """Camera-style auth; one 'user' role may access and construct media.

    GI exposes RTSPAuthMethod as an enum, not flags, so DIGEST|BASIC cannot be offered
    together: pick one per server (digest is what most IP cameras default to).
    """
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
    if method == "digest":
        auth.add_digest(user, password, token)
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
    else:
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
    server.set_auth(auth)


def _factory(launch: str, pool: GstRtspServer.RTSPAddressPool, auth: bool) -> GstRtspServer.RTSPMediaFactory:
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f"( {launch} )")
    factory.set_shared(True)  # every client sees the same live stream, like a camera
    factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP | GstRtsp.RTSPLowerTrans.UDP)
    factory.set_address_pool(pool)
    factory.set_latency(0)
    if auth:
        factory.add_role_from_structure(
            Gst.Structure.from_string(
                "user, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
            )[0]
        )
    return factory


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8554, help="RTSP port on 127.0.0.1 (0 = pick a free one)")
    p.add_argument("--user", default=None)
    p.add_argument("--password", default=None)
    p.add_argument("--auth", choices=("digest", "basic"), default="digest", help="auth scheme with --user")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--gop", type=int, default=50, help="keyframe interval in frames")
    p.add_argument("--bitrate", type=int, default=2000, help="video bitrate in kbit/s")
    p.add_argument("--backchannel-dir", default=None, help="serve ONVIF back-channel mounts, recording here")
    p.add_argument("--print-pipelines", action="store_true", help="print launch lines and exit")
    a = p.parse_args(argv)
    if (a.user is None) != (a.password is None):
        p.error("--user and --password go together")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    Gst.init(None)
    _require(*REQUIRED)
    launches = pipelines(a)
    if a.print_pipelines:
        for mount, launch in launches.items():
            print(f"/{mount}: {launch}")
        return 0

    server = GstRtspServer.RTSPOnvifServer() if a.backchannel_dir else GstRtspServer.RTSPServer()
    server.set_address(HOST)
    server.set_service(str(a.port))
    pool = GstRtspServer.RTSPAddressPool()
    pool.add_range(HOST, HOST, UDP_PORT_MIN, UDP_PORT_MAX, 0)  # ttl 0 = unicast range
    auth = a.user is not None
    if auth:
        _setup_auth(server, a.user, a.password, a.auth)
    mounts = server.get_mount_points()
    for mount, launch in launches.items():
        mounts.add_factory(f"/{mount}", _factory(launch, pool, auth))
    if a.backchannel_dir:
        for mount in BACKCHANNELS:
            factory = _backchannel_factory(a, mount, pool)
            if auth:
                factory.add_role_from_structure(
                    Gst.Structure.from_string(
                        "user, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
                    )[0]
                )
            mounts.add_factory(f"/{mount}", factory)

    if server.attach(None) == 0:
        print(f"gst_camera: cannot listen on {HOST}:{a.port}", file=sys.stderr, flush=True)
        return 1

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, loop.quit)
    print(f"READY rtsp://{HOST}:{server.get_bound_port()}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
