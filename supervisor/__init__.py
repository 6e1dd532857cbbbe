"""The control plane of h5gate: one asyncio process (uvicorn + Starlette)."""
