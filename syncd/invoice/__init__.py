"""invoice."""
