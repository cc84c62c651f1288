"""Installing stoker as a background service: pure generators (systemd, launchd, Windows), the plan, its applier."""
