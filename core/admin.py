"""Admin base classes every app's admin may use."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from guardian.admin import GuardedModelAdmin


class ReadOnlyAdmin(admin.ModelAdmin):
    """For records only the console writes (through its apps' actions, audited): viewable in admin,
    never added, changed or deleted there, which would bypass the actions and their audit entries."""

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[override]
        return False

    def has_change_permission(self, request, obj=None) -> bool:  # type: ignore[override]
        return False

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[override]
        return False


class SettingsInline(admin.StackedInline):
    """An app's per-service settings row, edited on its parent's admin page (the row is created
    with the parent and deleted with it: never added or removed here). The parent's admin saves it
    through the owning app's `update_settings` action (`update`), which validates and audits it."""

    update: Any = None  # the owning app's update_settings(service, changes, *, actor)
    can_delete = False
    extra = 0
    max_num = 1


class SuperuserOnlyAdmin(admin.ModelAdmin):
    """For admin pages that amount to running code on the host (django-q2's schedules name any
    importable function; resubmitting a task runs it again with its arguments): superusers only,
    whatever model permissions a staff user holds. Others get 403 on its pages and do not see it."""

    def _superuser(self, request: Any) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    def has_module_permission(self, request: Any) -> bool:
        return self._superuser(request)

    def has_view_permission(self, request: Any, obj: Any = None) -> bool:
        return self._superuser(request)

    def has_add_permission(self, request: Any, *args: Any) -> bool:
        return self._superuser(request) and super().has_add_permission(request, *args)

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return self._superuser(request) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return self._superuser(request) and super().has_delete_permission(request, obj)


def may_grant(user: Any, kind: str = "user") -> bool:
    """Who may see and change per-object permissions in admin: superusers, and staff holding
    guardian's own permission for it (`guardian.change_userobjectpermission` /
    `guardian.change_groupobjectpermission`); `change` on the object's model is not enough,
    or anyone who may edit a service could grant themselves (or anyone) every right on it."""
    if not (user.is_active and user.is_staff):
        return False
    return bool(user.is_superuser or user.has_perm(f"guardian.change_{kind}objectpermission"))


class GrantingGuardedModelAdmin(GuardedModelAdmin):
    """guardian's GuardedModelAdmin, whose "Object permissions" pages (list, per user, per group)
    answer 403 to a staff user who may not grant (may_grant), instead of guardian's default: anyone
    with `change` on the model may edit every user's and group's permissions on every object."""

    def obj_perms_manage_view(self, request: Any, object_pk: Any) -> Any:
        if not (may_grant(request.user, "user") and may_grant(request.user, "group")):
            raise PermissionDenied("You may not change who has which rights on this object.")
        return super().obj_perms_manage_view(request, object_pk)

    def obj_perms_manage_user_view(self, request: Any, object_pk: Any, user_id: Any) -> Any:
        if not may_grant(request.user, "user"):
            raise PermissionDenied("You may not change a user's rights on this object.")
        return super().obj_perms_manage_user_view(request, object_pk, user_id)

    def obj_perms_manage_group_view(self, request: Any, object_pk: Any, group_id: Any) -> Any:
        if not may_grant(request.user, "group"):
            raise PermissionDenied("You may not change a group's rights on this object.")
        return super().obj_perms_manage_group_view(request, object_pk, group_id)
