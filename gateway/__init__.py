"""The gateway: REST, WebSocket and dashboard over the event log and read models."""

VERSION = "1.0.0"  # the API's version (OpenAPI and /health)
