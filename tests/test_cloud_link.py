"""The cloud link's multiplexing on its own: two Link ends joined back to back (each one's send is the other's
dispatch), so calls, channels, closes and a dropped link are checked message by message, and frames that
break the format are refused. tests/test_cloud.py runs the same code between real processes."""

from __future__ import annotations

import asyncio
import json

import pytest

from supervisor.cloud import protocol
from supervisor.cloud.link import CLOSE_OFFLINE, Channel, ChannelClosed, Link, LinkDown
from supervisor.cloud.protocol import ProtocolError, Reply


def pair() -> tuple[Link, Link]:
    """(centre, edge), each sending straight into the other."""
    ends: dict[str, Link] = {}

    async def to_edge(message: str | bytes) -> None:
        await ends["edge"].dispatch(message)

    async def to_centre(message: str | bytes) -> None:
        await ends["centre"].dispatch(message)

    ends["centre"], ends["edge"] = Link("c", to_edge), Link("e", to_centre)
    return ends["centre"], ends["edge"]


async def test_a_call_gets_the_edges_reply_with_a_binary_body() -> None:
    centre, edge = pair()
    seen: list[tuple[str, list[tuple[str, str]]]] = []

    async def on_call(path: str, query: list[tuple[str, str]]) -> Reply:
        seen.append((path, query))
        return Reply(200, "image/jpeg", b"\xff\xd8" + bytes(range(256)) * 100)

    edge.on_call = on_call
    reply = await centre.call("GetImage", [("token", "cam"), ("x", "a&b=c")])
    assert seen == [("GetImage", [("token", "cam"), ("x", "a&b=c")])]
    assert reply == Reply(200, "image/jpeg", b"\xff\xd8" + bytes(range(256)) * 100)


async def test_a_failing_handler_answers_500_with_the_reason() -> None:
    centre, edge = pair()

    async def on_call(path: str, query: list[tuple[str, str]]) -> Reply:
        raise RuntimeError("disk on fire")

    edge.on_call = on_call
    reply = await centre.call("Search", [])
    assert reply.status == 500 and json.loads(reply.body) == {
        "bStatus": False,
        "strCode": "the edge failed: disk on fire",
    }


async def test_a_channel_carries_both_ways_and_closes_both_ways() -> None:
    centre, edge = pair()
    far: list[Channel] = []

    async def on_open(channel: Channel, path: str, query: list[tuple[str, str]]) -> None:
        assert (path, query) == ("/api/v1/h5swsapi", [("token", "cam")])
        far.append(channel)
        await channel.link.send(protocol.control("opened", ch=channel.ident))
        await channel.send(b"video/mp4")
        await channel.send(b"\x00" * 70000)
        await channel.send('{"type": "H5S_EVENT_PB_TIME"}')

    edge.on_open = on_open
    channel = await centre.open("/api/v1/h5swsapi", [("token", "cam")])
    assert await channel.receive() == b"video/mp4"
    assert await channel.receive() == b"\x00" * 70000
    assert await channel.receive() == '{"type": "H5S_EVENT_PB_TIME"}'
    await channel.send('{"cmd": "H5_START"}')
    assert await far[0].receive() == '{"cmd": "H5_START"}'
    await far[0].close(4000, "format changed")
    assert await channel.receive() == ChannelClosed(4000, "format changed")
    assert channel.ident not in centre.channels and far[0].ident not in edge.channels
    with pytest.raises(LinkDown):
        await channel.send(b"late")


async def test_a_dropped_link_fails_calls_and_ends_channels_as_offline() -> None:
    centre, edge = pair()
    started = asyncio.Event()

    async def on_call(path: str, query: list[tuple[str, str]]) -> Reply:
        started.set()
        await asyncio.Event().wait()  # never answers
        raise AssertionError

    async def on_open(channel: Channel, path: str, query: list[tuple[str, str]]) -> None:
        await channel.link.send(protocol.control("opened", ch=channel.ident))

    edge.on_call, edge.on_open = on_call, on_open
    channel = await centre.open("/api/v1/h5swsapi", [])
    pending = asyncio.create_task(centre.call("ManualRecordStart", []))
    await started.wait()
    centre.close("the edge's cable was cut")
    with pytest.raises(LinkDown, match="cable was cut"):
        await pending
    closed = await channel.receive()
    assert closed == ChannelClosed(CLOSE_OFFLINE, "source offline: the edge's cable was cut")
    with pytest.raises(LinkDown):
        await centre.call("Search", [])
    edge.close("gone")


async def test_an_open_nobody_answers_times_out_and_is_closed_at_the_edge() -> None:
    centre, edge = pair()
    far: list[Channel] = []

    async def on_open(channel: Channel, path: str, query: list[tuple[str, str]]) -> None:
        far.append(channel)  # never says opened

    edge.on_open = on_open
    with pytest.raises(TimeoutError):
        await centre.open("/api/v1/h5swsapi", [], timeout=0.2)
    assert await far[0].receive() == ChannelClosed(1000, "gave up waiting")
    assert not centre.channels


@pytest.mark.parametrize(
    "message",
    [b"", b"\x09\x00\x00\x00\x01data", "not json", '["t"]', '{"no": "type"}', '{"t": "close", "ch": "1"}',
     '{"t": "call", "id": 1, "path": "Search", "query": [["a"]]}', protocol.frame(protocol.REPLY, 1, b"\x00\x00")],
)  # fmt: skip
async def test_frames_that_break_the_format_are_refused(message: str | bytes) -> None:
    centre, edge = pair()
    centre.calls[1] = asyncio.get_running_loop().create_future()
    target = edge if isinstance(message, str) and "call" in message else centre

    async def on_call(path: str, query: list[tuple[str, str]]) -> Reply:
        return Reply(200, "", b"")

    edge.on_call = on_call
    with pytest.raises(ProtocolError):
        await target.dispatch(message)
