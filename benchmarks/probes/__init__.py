"""Probes: short recipes that answer one question on an existing cluster (see README.md here)."""
