"""Every message stoker sends: events, commands, telemetry, subjects and stream configs."""
