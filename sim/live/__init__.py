"""Live mode: the party services over HTTP, the gateway, the load generator and calibration."""
