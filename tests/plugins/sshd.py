"""pytest fixtures: sshd (placeholder until filled)."""
