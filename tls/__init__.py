"""tls package."""
