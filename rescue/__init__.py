"""blackstart.rescue."""
