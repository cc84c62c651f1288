"""Discovery: the worker registry (register, heartbeats, lost, returned, left, forgotten)."""
