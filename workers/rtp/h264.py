"""H.264 over RTP (RFC 6184): single NAL units, STAP-A and FU-A; the SPS read for picture size."""

from __future__ import annotations

from workers.rtp.bits import BitReader, unescape
from workers.rtp.packet import FrameAssembler, UnsupportedPacketization

SPS, PPS, AUD, IDR = 7, 8, 9, 5
HIGH_PROFILES = (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135)


class H264Depacketizer(FrameAssembler):
    PARAM_TYPES = (SPS, PPS)
    AUD_TYPE = AUD
    KEY_TYPES = (IDR,)

    @staticmethod
    def nal_type(nal: bytes) -> int:
        return nal[0] & 0x1F

    def unpack(self, p: bytes) -> None:
        t = p[0] & 0x1F
        if 1 <= t <= 23:
            self._nals.append(p)
        elif t == 24:  # STAP-A: 16-bit size, NAL unit, ...
            pos = 1
            while pos + 2 <= len(p):
                size = (p[pos] << 8) | p[pos + 1]
                pos += 2
                if size == 0 or pos + size > len(p):
                    raise ValueError("bad STAP-A")
                self._nals.append(p[pos : pos + size])
                pos += size
        elif t == 28:  # FU-A
            indicator, header = p[0], p[1]
            if header & 0x80:
                self._fu = bytearray([(indicator & 0xE0) | (header & 0x1F)])
            if self._fu is None:
                return  # the start of this NAL unit was lost (the frame is already marked broken)
            self._fu += p[2:]
            if header & 0x40:
                self._nals.append(bytes(self._fu))
                self._fu = None
        else:
            raise UnsupportedPacketization(f"H.264 packetization type {t}")


def sps_size(sps: bytes) -> tuple[int, int]:
    """Width and height in pixels (cropping applied) from an SPS NAL unit."""
    r = BitReader(unescape(sps[1:]))
    profile = r.u(8)
    r.skip(16)  # constraint flags, level
    r.ue()  # seq_parameter_set_id
    chroma = 1
    if profile in HIGH_PROFILES:
        chroma = r.ue()
        if chroma == 3:
            r.skip(1)
        r.ue()
        r.ue()
        r.skip(1)
        if r.u(1):  # seq_scaling_matrix_present
            for i in range(8 if chroma != 3 else 12):
                if r.u(1):
                    last, nxt = 8, 8
                    for _ in range(16 if i < 6 else 64):
                        if nxt:
                            nxt = (last + r.se() + 256) % 256
                        last = nxt or last
    r.ue()  # log2_max_frame_num_minus4
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()
    elif poc_type == 1:
        r.skip(1)
        r.se()
        r.se()
        for _ in range(r.ue()):
            r.se()
    r.ue()  # max_num_ref_frames
    r.skip(1)
    width_mbs = r.ue() + 1
    height_units = r.ue() + 1
    frame_mbs_only = r.u(1)
    if not frame_mbs_only:
        r.skip(1)
    r.skip(1)
    width = width_mbs * 16
    height = (2 - frame_mbs_only) * height_units * 16
    if r.u(1):  # frame_cropping
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        unit_x = 1 if chroma in (0, 3) else 2
        unit_y = (1 if chroma in (0, 3) else (2 if chroma == 1 else 1)) * (2 - frame_mbs_only)
        width -= unit_x * (left + right)
        height -= unit_y * (top + bottom)
    return width, height


def avcc(sps: bytes, pps: list[bytes]) -> bytes:
    """AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3) with 4-byte NAL lengths."""
    out = bytearray([1, sps[1], sps[2], sps[3], 0xFF, 0xE1])
    out += len(sps).to_bytes(2, "big") + sps
    out.append(len(pps))
    for p in pps:
        out += len(p).to_bytes(2, "big") + p
    if sps[1] in HIGH_PROFILES:
        r = BitReader(unescape(sps[1:]))
        r.skip(24)
        r.ue()
        chroma = r.ue()
        if chroma == 3:
            r.skip(1)
        depth_luma, depth_chroma = r.ue(), r.ue()
        out += bytes([0xFC | chroma, 0xF8 | depth_luma, 0xF8 | depth_chroma, 0])
    return bytes(out)
