"""pytest fixtures: postgres (placeholder until filled)."""
