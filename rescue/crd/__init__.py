"""blackstart.rescue.crd."""
