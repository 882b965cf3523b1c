"""Sign-in: Django's login view, telling a locked-out user so (and when to retry)."""

from __future__ import annotations

from django.contrib.auth import views as auth_views

from accounts.throttle import client_ip, lockout


class LoginView(auth_views.LoginView):
    template_name = "registration/login.html"
    redirect_authenticated_user = True

    def form_invalid(self, form):  # type: ignore[no-untyped-def]
        # A locked-out user is told so (and when to retry), not "wrong password" again.
        locked = lockout(self.request.POST.get("username", ""), client_ip(self.request))
        response = self.render_to_response(self.get_context_data(form=form, lockout=locked))
        if locked is not None:
            response.status_code = 429
            response["Retry-After"] = str(locked.retry_after)
        return response
