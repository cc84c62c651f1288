"""Every message stoker sends: events, commands, telemetry, dispatch, and the subjects they travel on."""
