"""The overview page and sign-in. App pages live in each app's views.py."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from audit.models import AuditEntry
from audit.views import can_view_audit
from policies.access import restrict
from services.views import htmx_partial, service_rows
from workflows.models import WorkflowDefinition, WorkflowRun


class LoginView(auth_views.LoginView):
    template_name = "registration/login.html"
    redirect_authenticated_user = True

    def form_invalid(self, form):  # type: ignore[no-untyped-def]
        # A locked-out user is told so (and when to retry), not "wrong password" again.
        from hmsmgmt.throttle import client_ip, lockout

        locked = lockout(self.request.POST.get("username", ""), client_ip(self.request))
        response = self.render_to_response(self.get_context_data(form=form, lockout=locked))
        if locked is not None:
            response.status_code = 429
            response["Retry-After"] = str(locked.retry_after)
        return response


@login_required
def overview(request: HttpRequest) -> HttpResponse:
    user = request.user
    if htmx_partial(request) and request.GET.get("part") == "services":
        return render(request, "hmsmgmt/_services.html", {"rows": service_rows(user)})
    context = {
        "rows": service_rows(user),
        "runs": restrict(WorkflowRun.objects.select_related("actor"), user)[:10],
        "flows": restrict(WorkflowDefinition.objects.filter(enabled=True), user, "run"),
        "audit": AuditEntry.objects.all()[:10] if can_view_audit(user) else None,
    }
    return render(request, "hmsmgmt/overview.html", context)
