"""Stream agents and the per-lead decisions they make."""
