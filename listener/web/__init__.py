"""The daemon's web server: probes, metrics and the operator console."""
