"""H.265 over RTP (RFC 7798): single NAL units, aggregation packets (AP) and fragmentation units (FU);
the SPS read for picture size and the hvcC record. DONL fields are not supported (sprop-max-don-diff 0,
what cameras send)."""

from __future__ import annotations

from workers.rtp.bits import BitReader, unescape
from workers.rtp.packet import FrameAssembler, UnsupportedPacketization

VPS, SPS, PPS, AUD = 32, 33, 34, 35
IRAP = (16, 17, 18, 19, 20, 21)


def nal_type(nal: bytes) -> int:
    return (nal[0] >> 1) & 0x3F


class H265Depacketizer(FrameAssembler):
    PARAM_TYPES = (VPS, SPS, PPS)
    AUD_TYPE = AUD
    KEY_TYPES = IRAP

    @staticmethod
    def nal_type(nal: bytes) -> int:
        return (nal[0] >> 1) & 0x3F

    def unpack(self, p: bytes) -> None:
        t = (p[0] >> 1) & 0x3F
        if t < 48:
            self._nals.append(p)
        elif t == 48:  # AP: payload header, then 16-bit size + NAL unit, ...
            pos = 2
            while pos + 2 <= len(p):
                size = (p[pos] << 8) | p[pos + 1]
                pos += 2
                if size == 0 or pos + size > len(p):
                    raise ValueError("bad AP")
                self._nals.append(p[pos : pos + size])
                pos += size
        elif t == 49:  # FU: payload header, FU header (S, E, type)
            header = p[2]
            if header & 0x80:
                self._fu = bytearray([(p[0] & 0x81) | ((header & 0x3F) << 1), p[1]])
            if self._fu is None:
                return
            self._fu += p[3:]
            if header & 0x40:
                self._nals.append(bytes(self._fu))
                self._fu = None
        else:
            raise UnsupportedPacketization(f"H.265 packetization type {t}")


def _skip_sub_layers(r: BitReader, max_sub_layers_minus1: int) -> None:
    present = [(r.u(1), r.u(1)) for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1 > 0:
        r.skip(2 * (8 - max_sub_layers_minus1))
    for profile, level in present:
        if profile:
            r.skip(88)
        if level:
            r.skip(8)


def sps_info(sps: bytes) -> dict[str, int]:
    """What hvcC and the sample entry need from an SPS NAL unit."""
    rbsp = unescape(sps[2:])
    r = BitReader(rbsp)
    r.skip(4)
    max_sub = r.u(3)
    nesting = r.u(1)
    r.skip(96)  # general profile_tier_level: kept as bytes below
    _skip_sub_layers(r, max_sub)
    r.ue()  # sps_seq_parameter_set_id
    chroma = r.ue()
    if chroma == 3:
        r.skip(1)
    width, height = r.ue(), r.ue()
    if r.u(1):  # conformance window, in chroma units
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        sub_w = 2 if chroma in (1, 2) else 1
        sub_h = 2 if chroma == 1 else 1
        width -= sub_w * (left + right)
        height -= sub_h * (top + bottom)
    depth_luma, depth_chroma = r.ue(), r.ue()
    return {
        "width": width,
        "height": height,
        "chroma": chroma,
        "depth_luma": depth_luma,
        "depth_chroma": depth_chroma,
        "max_sub_layers": max_sub + 1,
        "nesting": nesting,
        "ptl": int.from_bytes(rbsp[1:13], "big"),
    }


def sps_size(sps: bytes) -> tuple[int, int]:
    info = sps_info(sps)
    return info["width"], info["height"]


def hvcc(vps: list[bytes], sps: list[bytes], pps: list[bytes]) -> bytes:
    """HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 §8.3.3) with 4-byte NAL lengths."""
    info = sps_info(sps[0])
    ptl = info["ptl"].to_bytes(12, "big")  # profile space/tier/idc, compatibility flags, constraints, level
    out = bytearray([1])
    out += ptl[:12]
    out += bytes([0xF0, 0x00, 0xFC, 0xFC | info["chroma"], 0xF8 | info["depth_luma"], 0xF8 | info["depth_chroma"]])
    out += b"\x00\x00"  # avgFrameRate unknown
    out.append((info["max_sub_layers"] << 3) | (info["nesting"] << 2) | 3)
    arrays = [(VPS, vps), (SPS, sps), (PPS, pps)]
    out.append(len(arrays))
    for kind, units in arrays:
        out.append(kind)  # array_completeness 0: hev1, parameter sets may also come in-band
        out += len(units).to_bytes(2, "big")
        for unit in units:
            out += len(unit).to_bytes(2, "big") + unit
    return bytes(out)
