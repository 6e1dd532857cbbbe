"""A small asyncio RTSP client (RFC 2326): DESCRIBE/SETUP/PLAY over TCP, RTP interleaved or over UDP.

Our own rather than ffmpeg's: ffmpeg's RTSP demuxer holds each H.264 frame until the next one starts;
here the RTP marker bit ends a frame, so a frame is ready the moment its last packet arrives.
"""
