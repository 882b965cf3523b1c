"""The three standing groups and their model-level permissions.

Migration 0002 created them once; this keeps them present after anything that empties the auth
tables and re-runs post_migrate (a `flush`, which every transactional test does at teardown), so a
fresh database and a flushed one agree. Per-object grants are made in admin, not here.
"""

from __future__ import annotations

from typing import Any

GROUPS: dict[str, list[tuple[str, str]]] = {
    "operators": [
        ("fleet", "view_service"),
        ("fleet", "scale_service"),
        ("fleet", "view_swarmnode"),
        ("workflows", "view_workflowdefinition"),
        ("workflows", "run_workflowdefinition"),
        ("workflows", "view_workflowrun"),
        ("workflows", "cancel_workflowrun"),
        # Added by the workflows app after 0002; granted here once those permissions exist.
        ("workflows", "retry_workflowrun"),
        ("workflows", "approve_workflowrun"),
        ("workflows", "pause_workflowrun"),
    ],
    # Analysts get run/view on analytics flows per object (granted when such a flow is saved).
    "analysts": [],
    "auditors": [("audit", "view_auditentry")],
}


def ensure_groups(**kwargs: Any) -> None:
    """post_migrate receiver: create missing groups and add missing permissions; never removes
    a grant an administrator made. Acts once per migrate/flush, after the last app's signal, when
    every permission row exists."""
    from django.apps import apps

    # Django sends post_migrate only for apps with a models module.
    if kwargs.get("app_config") is not [a for a in apps.get_app_configs() if a.models_module is not None][-1]:
        return
    from django.contrib.auth.models import Group, Permission

    for name, perms in GROUPS.items():
        group, _ = Group.objects.get_or_create(name=name)
        wanted = [Permission.objects.filter(content_type__app_label=app, codename=code).first()
                  for app, code in perms]
        group.permissions.add(*[p for p in wanted if p is not None])
