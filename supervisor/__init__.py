"""The control plane of h5gate: one asyncio process (uvicorn + Starlette)."""

# The release date of this version: GetSystemInfo's strVersion in the vendor's rX.Y.MMDD.YY shape carries it.
RELEASE_DATE = "2026-11-29"
