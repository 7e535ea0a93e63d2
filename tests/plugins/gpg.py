"""pytest fixtures: gpg (placeholder until filled)."""
