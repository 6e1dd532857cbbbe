"""Cloud edges (manual §5.6): an h5gate inside a site connects out to a central h5gate and serves it.

The edge, typically behind NAT, opens one WebSocket to the centre and keeps it up (edge.py); the centre
never connects to the edge. Over that one link (link.py, framed as protocol.py says) the centre sends
API calls for the edge to carry out and opens channels (a tunnelled WebSocket: a live stream, a
playback) that the edge serves from its own app in-process (local.py). The centre keeps a registry of
its edges and maps each edge source to a centre-side source (centre.py) whose hub is fed by one channel
(cloud_input.py), so a centre viewer of an edge camera costs the link one stream however many watch.
"""
