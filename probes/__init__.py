"""blackstart.probes."""
