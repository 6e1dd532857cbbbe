"""Find the ffmpeg binary and build each source's command line.

The command line is a plain argv list (no shell): the source URL is always exactly one element after
`-i`, validated beforehand against a protocol allow-list, so no request can smuggle in an option.
One ffmpeg per source writes one output from a single camera connection: the fMP4 pipe for the hub.
HLS is made from the hub, and only while someone fetches it (workers/hls.py).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https")
PIPE_MOVFLAGS = "empty_moov+default_base_moof+frag_every_frame+skip_trailer"
MSE_VIDEO = ("h264", "hevc")  # copied as they are; anything else is encoded to H.264
MSE_AUDIO = ("aac",)  # copied; anything else (G.711, MP3, Opus from RTSP ...) becomes AAC


def find_ffmpeg(configured: str = "") -> str:
    """config/H5GATE_FFMPEG, then `ffmpeg` on PATH, then the binary bundled by imageio-ffmpeg."""
    if configured:
        return configured
    on_path = shutil.which("ffmpeg")
    if on_path:
        return on_path
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


@dataclass
class Plan:
    """What one ffmpeg run does; the process learns codecs from ffmpeg's own output and adjusts."""

    url: str  # validated URL, or "file:<absolute path>"
    is_file: bool
    audio: bool  # bEnableAudio
    transport: str = "tcp"  # rtsp transport for this attempt: tcp or udp
    video_mode: str = "copy"  # copy | h264
    audio_mode: str = "copy"  # copy | aac
    timeout_s: float = 5.0
    token: str = ""
    encode: Encode | None = None  # a transcoding profile: always H.264 at this size, rate and bit rate


@dataclass
class Encode:
    """What a transcoding profile asks of the H.264 encoder; 0 keeps the input's value."""

    width: int = 0
    height: int = 0  # with width: scale to exactly this; 0 with a width: keep the aspect ratio
    fps: int = 0
    bitrate_k: int = 0  # kbit/s (capped with a buffer of one second)


def _input_args(plan: Plan) -> list[str]:
    us = str(int(plan.timeout_s * 1_000_000))
    scheme = plan.url.split(":", 1)[0].lower()
    if plan.is_file:
        return ["-re", "-stream_loop", "-1"]
    if scheme in ("rtsp", "rtsps"):
        return ["-rtsp_transport", plan.transport, "-timeout", us]
    return ["-rw_timeout", us]


def _codec_args(plan: Plan) -> list[str]:
    args = ["-map", "0:v:0"]
    if plan.audio:
        args += ["-map", "0:a:0?"]
    if plan.encode is not None:
        args += _encode_args(plan.encode)
    elif plan.video_mode == "copy":
        args += ["-c:v", "copy"]
    else:
        args += [
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-tune",
            "zerolatency",
            "-pix_fmt",
            "yuv420p",
            "-g",
            "50",
            "-bf",
            "0",
        ]
    if plan.audio:
        args += ["-c:a", "copy"] if plan.audio_mode == "copy" else ["-c:a", "aac", "-b:a", "64k"]
    else:
        args += ["-an"]
    return args


def _encode_args(enc: Encode) -> list[str]:
    """libx264 for a transcoding profile: scaled, rate-limited, keyframe every 2 s, no B-frames (WebRTC)."""
    fps = enc.fps or 25
    args = ["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-pix_fmt", "yuv420p"]
    args += ["-g", str(fps * 2), "-bf", "0"]
    filters = []
    if enc.width:
        filters.append(f"scale={int(enc.width)}:{int(enc.height) if enc.height else -2}")
    if enc.fps:
        filters.append(f"fps={int(enc.fps)}")
    if filters:
        args += ["-vf", ",".join(filters)]
    if enc.bitrate_k:
        rate = f"{int(enc.bitrate_k)}k"
        args += ["-b:v", rate, "-maxrate", rate, "-bufsize", rate]
    return args


def build_command(binary: str, plan: Plan) -> list[str]:
    cmd = [
        binary,
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-loglevel",
        "repeat+level+info",
        "-fflags",
        "+genpts",
        *_input_args(plan),
        "-i",
        plan.url,
    ]
    codec = _codec_args(plan)
    cmd += [*codec, "-f", "mp4", "-movflags", PIPE_MOVFLAGS, "-flush_packets", "1", "pipe:1"]
    return cmd
