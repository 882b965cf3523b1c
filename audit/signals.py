"""Signal receivers: sign-in and sign-out, and django-guardian object permissions changed in
Django admin. (Failed sign-ins are recorded by hmsmgmt's throttling backend as auth.login denied;
Django admin edits of users and groups by audit.admin.)"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from audit import events
from audit.actions import record
from audit.context import request_state


def _real_request(request: Any) -> bool:
    # The test client's force_login()/login() signs in through a bare HttpRequest without
    # REMOTE_ADDR; a sign-in over HTTP always has one. Only the latter is an entry point.
    return request is not None and bool(getattr(request, "META", {}).get("REMOTE_ADDR"))


@receiver(user_logged_in, dispatch_uid="audit.login")
def on_login(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if not _real_request(request):
        return
    with transaction.atomic():
        record(events.AUTH_LOGIN, actor=user, target=user, payload={"username": user.get_username()})


@receiver(user_logged_out, dispatch_uid="audit.logout")
def on_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is None or not _real_request(request):
        return  # signing out without a session is not an action
    with transaction.atomic():
        record(events.AUTH_LOGOUT, actor=user, target=user, payload={"username": user.get_username()})


# --- guardian object permissions edited in Django admin ------------------------------------------
def _perm_change(instance: Any, change: str) -> None:
    state = request_state()
    if not state or not state.get("admin_perm"):
        return  # outside admin's permission pages, the action that assigns a permission audits it
    holder = getattr(instance, "user", None) or getattr(instance, "group", None)
    kind = "user" if hasattr(instance, "user_id") else "group"
    state["perm_changes"].append({
        "kind": kind,
        "holder": str(holder),
        "holder_id": getattr(holder, "pk", None),
        "content_type": instance.content_type.natural_key(),
        "model": instance.content_type.model_class(),
        "object_pk": str(instance.object_pk),
        "perm": instance.permission.codename,
        "change": change,
    })


def flush_permission_changes(state: dict[str, Any]) -> None:
    """One entry per (holder, object) changed by one admin form submission, inside its transaction."""
    changes = state.get("perm_changes") or []
    if not changes:
        return
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for c in changes:
        groups.setdefault((c["kind"], c["holder_id"], tuple(c["content_type"]), c["object_pk"]), []).append(c)
    for (kind, _hid, ct, object_pk), items in groups.items():
        added = sorted({c["perm"] for c in items if c["change"] == "added"})
        removed = sorted({c["perm"] for c in items if c["change"] == "removed"})
        if not added and not removed:
            continue
        model = items[0]["model"]
        obj = model._default_manager.filter(pk=object_pk).first() if model else None
        holder = items[0]["holder"]
        record(
            "permission.change",
            actor=state.get("user"),
            target=obj,
            target_type="" if obj is not None else ".".join(ct),
            target_id="" if obj is not None else object_pk,
            payload={kind: holder, "added": added, "removed": removed},
        )
    state["perm_changes"] = []


# --- safety net: admin changes that no action audited ------------------------------------------
def flush_admin_log(state: dict[str, Any]) -> None:
    """One entry per admin LogEntry of a request in which nothing else was audited (the admin of
    that model does not go through its app's actions). Runs inside the request's transaction; reads
    the LogEntry rows rather than a post_save signal because bulk deletions are bulk-created."""
    if state.get("audited"):
        return
    user = state.get("user")
    if user is None or not getattr(user, "is_authenticated", False):
        return
    from django.contrib.admin.models import LogEntry

    verbs = {1: "add", 2: "change", 3: "delete"}
    logged = (LogEntry.objects.filter(user_id=user.pk, action_time__gte=state["started_at"])
              .select_related("content_type").order_by("id"))
    for log_entry in logged:
        ct = log_entry.content_type
        record(
            f"admin.{verbs.get(log_entry.action_flag, 'change')}",
            actor=user,
            target_type=f"{ct.app_label}.{ct.model}" if ct else "",
            target_id=log_entry.object_id or "",
            target_repr=log_entry.object_repr,
            payload={"object": log_entry.object_repr, "change_message": log_entry.get_change_message()},
        )


def connect_guardian() -> None:
    from guardian.models import GroupObjectPermission, UserObjectPermission

    for model in (UserObjectPermission, GroupObjectPermission):
        post_save.connect(_on_perm_saved, sender=model, dispatch_uid=f"audit.perm_saved.{model.__name__}")
        post_delete.connect(_on_perm_deleted, sender=model, dispatch_uid=f"audit.perm_deleted.{model.__name__}")


def _on_perm_saved(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    if created:
        _perm_change(instance, "added")


def _on_perm_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    _perm_change(instance, "removed")
