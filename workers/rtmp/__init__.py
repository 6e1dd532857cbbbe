"""RTMP: the server encoders (OBS, ffmpeg -f flv) publish to, and the AMF0 and chunk formats it speaks."""
