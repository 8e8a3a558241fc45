"""Operate: `pacsnode serve` and its background loops, the audit trail, retention and logging."""
