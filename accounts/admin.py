from django import forms
from django.contrib import admin, messages

from accounts import actions
from accounts.models import ApiToken, LoginFailure, LoginThrottle
from core.admin import ReadOnlyAdmin


class ApiTokenForm(forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ("name", "expires_at")

    def clean_expires_at(self):  # type: ignore[no-untyped-def]
        new = self.cleaned_data.get("expires_at")
        old = ApiToken.objects.filter(pk=self.instance.pk).values_list("expires_at", flat=True).first()
        if actions.later_expiry(old, new):
            raise forms.ValidationError(
                "A token's expiry may only be moved earlier (or left as it is); create a new token instead.")
        return new


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are created with `manage.py create_api_token` (the secret is printed once);
    here they can be listed, renamed, made to expire sooner and revoked (never extended)."""

    form = ApiTokenForm

    list_display = ("prefix", "user", "name", "created_at", "expires_at", "revoked_at", "last_used_at")
    readonly_fields = ("user", "prefix", "digest", "created_at", "revoked_at", "last_used_at")
    actions = ["revoke"]

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[override]
        return False

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[override]
        return False

    def save_model(self, request, obj, form, change):  # type: ignore[no-untyped-def]
        # Through the action (audited, and it refuses a later expiry itself).
        actions.update_api_token(obj, actor=request.user, name=form.cleaned_data.get("name"),
                                 expires_at=form.cleaned_data.get("expires_at"),
                                 clear_expiry=form.cleaned_data.get("expires_at") is None)

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


@admin.register(LoginThrottle)
class LoginThrottleAdmin(ReadOnlyAdmin):
    """The sign-in throttle's counters (a username from one address `ua:`, an address `a:`, a
    username from all addresses `u:`): failures since window_start."""

    list_display = ("key", "count", "window_start")
    search_fields = ("key",)
