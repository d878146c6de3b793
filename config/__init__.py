"""Settings and the default rule file."""
