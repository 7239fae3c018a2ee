"""Webhooks (issue 13)."""
