"""The projector: keeps every read model up to date from the event log."""
