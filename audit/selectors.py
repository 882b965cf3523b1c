"""Who may read the audit log, shared by the audit pages, the audit API and the overview."""

from __future__ import annotations

from typing import Any


def can_view_audit(user: Any) -> bool:
    return bool(user.is_active and (user.is_superuser or user.has_perm("audit.view_auditentry")))
