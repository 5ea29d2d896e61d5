"""blackstart.rescue.wire."""
