"""The recordings wing: everything about recorded files except their bytes.

- service.py    the Recordings service: sessions (Record, ManualRecordStart, PathRecord), continuous and
                scheduled recording, snapshots, exports, status; what supervisor/api/records.py calls
- index.py      the SQLite index: one `Recording` type (a row, a file found on disk, a file being written)
- retention.py  deleting the oldest files by age, quota and disk fullness
- schedule.py   the weekly schedule parser (`mon-fri 08:00-18:00`)
- reindex.py    rebuilding the index from the files in the media store (thread-side)
- paths.py      the store's path layout and the manual's time formats

The bytes (writing fragments from the hub, reading them back for playback and export) stay in workers/
(recorder.py, playback.py), which know nothing of this package.
"""
