"""Monitor: host and GPU samples on every machine; alerts (hysteresis, silence, stalled jobs) on the control plane."""
