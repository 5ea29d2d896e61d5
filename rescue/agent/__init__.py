"""blackstart.rescue.agent."""
