"""Adapters for other frameworks (each behind its own extra)."""
