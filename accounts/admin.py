from django.contrib import admin, messages

from accounts import actions
from accounts.models import ApiToken, LoginFailure
from core.admin import ReadOnlyAdmin


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are created with `manage.py create_api_token` (the secret is printed once);
    here they can be listed and revoked."""

    list_display = ("prefix", "user", "name", "created_at", "expires_at", "revoked_at", "last_used_at")
    readonly_fields = ("user", "prefix", "digest", "created_at", "revoked_at", "last_used_at")
    actions = ["revoke"]

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[override]
        return False

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[override]
        return False

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request, queryset):  # type: ignore[no-untyped-def]
        for token in queryset:
            actions.revoke_api_token(token, actor=request.user)
        messages.success(request, f"Revoked {queryset.count()} token(s).")


@admin.register(LoginFailure)
class LoginFailureAdmin(ReadOnlyAdmin):
    """Failed sign-ins counted by the lockout (kept for twice its window; each is also audited)."""

    list_display = ("id", "username", "ip", "at")
    search_fields = ("username", "ip")
