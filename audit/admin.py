"""Admin: the audit log read-only, and Django's own User and Group admins re-registered so that
every add, change and delete writes one audit entry with a field-level diff, in the admin's
transaction. (Object permissions edited through django-guardian's admin pages: audit.signals.)"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.db import models, transaction

from audit import events
from audit.actions import record
from audit.models import AuditCheckpoint, AuditEntry, AuditVerification, RefusalBucket
from core.admin import ReadOnlyAdmin


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    """Read-only: the log is append-only, even for superusers."""

    list_display = ("id", "seq", "created_at", "actor", "action", "outcome", "target_type", "target_id")
    list_filter = ("action", "outcome", "target_type")
    search_fields = ("actor", "target_id", "request_id")


@admin.register(AuditVerification)
class AuditVerificationAdmin(ReadOnlyAdmin):
    """Chain verifications asked for from the audit page ("Verify chain") and their results."""

    list_display = ("id", "requested_by", "created_at", "finished_at", "status", "checked", "bad_seq", "pending")
    list_filter = ("status",)


@admin.register(AuditCheckpoint)
class AuditCheckpointAdmin(AuditEntryAdmin):
    list_display = ("id", "created_at", "last_seq", "count", "alg", "exported_to", "webhook_status")
    list_filter = ("alg",)
    search_fields = ("last_hash",)


@admin.register(RefusalBucket)
class RefusalBucketAdmin(ReadOnlyAdmin):
    """Refusals being counted this minute (audit.refusals); each closed minute becomes one entry."""

    list_display = ("minute", "status", "ip", "actor", "count", "first_entry", "last_path")
    list_filter = ("status",)


# --- field-level diffs --------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """A form value as JSON: objects by name, sets sorted, times ISO."""
    if isinstance(value, models.Model):
        return str(value)
    if isinstance(value, (models.QuerySet, list, tuple, set)):
        return sorted(str(v) for v in value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _secret(name: str) -> bool:
    return "password" in name


def form_changes(form: Any) -> dict[str, list[Any]]:
    """{field: [before, after]} for what the admin form changed; passwords are never included."""
    changes: dict[str, list[Any]] = {}
    for name in form.changed_data:
        if _secret(name):
            changes[name] = ["[redacted]", "[changed]"]
            continue
        before, after = _plain(form.initial.get(name)), _plain(form.cleaned_data.get(name))
        if before != after:
            changes[name] = [before, after]
    return changes


def form_values(form: Any) -> dict[str, Any]:
    return {name: _plain(value) for name, value in form.cleaned_data.items() if not _secret(name)}


def snapshot(obj: models.Model) -> dict[str, Any]:
    """What a deleted object said, so the entry keeps it after the row is gone."""
    data: dict[str, Any] = {}
    for f in obj._meta.concrete_fields:
        if not _secret(f.name):
            data[f.name] = _plain(getattr(obj, f.attname))
    for f in obj._meta.many_to_many:
        data[f.name] = _plain(list(getattr(obj, f.name).all()))
    return data


class AuditedAdminMixin:
    """save_related runs after save_model and the many-to-many save, inside the admin's
    transaction: the one place that sees the whole change, so the one entry is written there."""

    audit_noun = "object"

    def save_related(self, request, form, formsets, change):  # type: ignore[no-untyped-def]
        super().save_related(request, form, formsets, change)  # type: ignore[misc]
        obj = form.instance
        if change:
            changes = form_changes(form)
            if changes:
                record(f"{self.audit_noun}.update", actor=request.user, target=obj, payload={"changes": changes})
        else:
            record(f"{self.audit_noun}.create", actor=request.user, target=obj, payload={"values": form_values(form)})

    def delete_model(self, request, obj):  # type: ignore[no-untyped-def]
        with transaction.atomic():
            record(f"{self.audit_noun}.delete", actor=request.user, target=obj, payload={"deleted": snapshot(obj)})
            super().delete_model(request, obj)  # type: ignore[misc]

    def delete_queryset(self, request, queryset):  # type: ignore[no-untyped-def]
        with transaction.atomic():
            for obj in queryset:
                record(f"{self.audit_noun}.delete", actor=request.user, target=obj, payload={"deleted": snapshot(obj)})
            super().delete_queryset(request, queryset)  # type: ignore[misc]


class AuditedUserAdmin(AuditedAdminMixin, UserAdmin):
    audit_noun = "user"

    def user_change_password(self, request, id, form_url=""):  # type: ignore[no-untyped-def]  # noqa: A002
        with transaction.atomic():
            response = super().user_change_password(request, id, form_url)
            if request.method == "POST" and response.status_code == 302:
                user = self.get_object(request, id)
                if user is not None:
                    record(events.USER_PASSWORD_CHANGE, actor=request.user, target=user,
                           payload={"username": user.get_username()})
        return response


class AuditedGroupAdmin(AuditedAdminMixin, GroupAdmin):
    audit_noun = "group"


for _model, _admin in ((User, AuditedUserAdmin), (Group, AuditedGroupAdmin)):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)
    admin.site.register(_model, _admin)
