"""The aiortc WebRTC sidecar."""
