"""blackstart.clusters."""
