"""blackstart.actions."""
