"""blackstart.rescue.controller."""
