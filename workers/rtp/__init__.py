"""RTP depacketizers: RTP payloads of one stream in, whole access units (video) or audio frames out.

Frame boundaries come from the RTP timestamp and the marker bit, never from NAL unit types, so a frame
sent as several slices (each keyframe slice with its own SPS/PPS) stays one sample.
"""
