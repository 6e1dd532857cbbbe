"""Which API calls travel over the link, and the role each needs at the centre (as the edge's own API asks).

The centre forwards a call when it carries `servertoken` or names (`token`) a source of an edge; the
edge carries out only these calls and opens only these sockets, whatever the centre sends, so the link
cannot be used to reach the edge's user or system settings.
"""

from __future__ import annotations

FORWARDED: dict[str, str] = {
    # sources and ONVIF (manual §5.6: servertoken on AddSrc*/OnvifSearch/OnvifProbe)
    "AddSrcRTSP": "Administrator",
    "AddSrcFile": "Administrator",
    "AddSrcONVIF": "Administrator",
    "UpdateSrcRTSP": "Administrator",
    "UpdateSrcFile": "Administrator",
    "UpdateSrcONVIF": "Administrator",
    "DelSrc": "Administrator",
    "OnvifSearch": "Administrator",
    "OnvifProbe": "Administrator",
    # PTZ
    "Ptz": "Operator",
    "GetPresets": "Viewer",
    "SetPreset": "Operator",
    "DelPreset": "Operator",
    # recording, snapshots, search
    "Record": "Operator",
    "ManualRecordStart": "Operator",
    "ManualRecordStop": "Operator",
    "PathRecord": "Operator",
    "Snapshot": "Operator",
    "PathSnapshot": "Operator",
    "SetRecord": "Administrator",
    "GetRecordStatus": "Viewer",
    "Search": "Viewer",
    "GetImage": "Viewer",
}
# After these the edge's source list has changed: it is sent before the answer, so the centre knows
# the new source (and its centre-side token) when the caller gets the answer.
CHANGES_SOURCES = frozenset({"AddSrcRTSP", "AddSrcFile", "AddSrcONVIF", "DelSrc", "SetRecord", "UpdateSrcRTSP",
                             "UpdateSrcFile", "UpdateSrcONVIF"})  # fmt: skip
SOCKETS = frozenset({"/api/v1/h5swsapi"})  # live video and playback, tunnelled
FILES = "/mediastore/"  # recordings and snapshots, streamed by their strPath
