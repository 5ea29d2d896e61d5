"""blackstart.reports."""
