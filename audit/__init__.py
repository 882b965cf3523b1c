"""Audit log. Use `audit.actions.record()` inside the transaction of the change."""
