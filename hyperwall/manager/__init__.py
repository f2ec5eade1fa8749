"""The manager: the control plane's HTTP API over the store (`docs/design/manager.md`).

`app.create_app(store_url, ...)` builds the FastAPI application; `server.serve` runs it
with uvicorn (optionally TLS). Policy logic lives in `service`, access control in `auth`.
"""
