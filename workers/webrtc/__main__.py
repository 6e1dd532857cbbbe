"""`python -m workers.webrtc --fd N --config JSON`: the WebRTC sidecar, started and watched by the supervisor.

It talks to the supervisor over the inherited Unix socket `fd` only; its logs go to the inherited stderr,
one line per event, in the supervisor's format.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import sys

from workers.webrtc import wire
from workers.webrtc.ice import PortRangeLoop, use_host_addresses
from workers.webrtc.peer import register_h264_profiles
from workers.webrtc.push import receive_undecoded
from workers.webrtc.sidecar import Sidecar, SidecarConfig


async def _main(fd: int, config: SidecarConfig) -> None:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    await Sidecar(reader, wire.Link(writer), config).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.webrtc")
    parser.add_argument("--fd", type=int, required=True, help="inherited Unix socket to the supervisor")
    parser.add_argument("--config", default="{}", help="SidecarConfig as JSON")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("aioice", "aiortc"):  # their INFO is one line per ICE check
        logging.getLogger(noisy).setLevel(logging.WARNING)
    config = SidecarConfig(**json.loads(args.config))
    use_host_addresses(config.addresses)
    register_h264_profiles()
    receive_undecoded()
    with asyncio.Runner(loop_factory=lambda: PortRangeLoop(config.port_min, config.port_max)) as runner:
        runner.run(_main(args.fd, config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
