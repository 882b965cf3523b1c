"""Audit pages (auditors only)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from audit.models import AuditEntry


def can_view_audit(user: Any) -> bool:
    return bool(user.is_active and (user.is_superuser or user.has_perm("audit.view_auditentry")))


@login_required
def audit_list(request: HttpRequest) -> HttpResponse:
    if not can_view_audit(request.user):
        raise PermissionDenied("Only auditors may read the audit log.")
    qs = AuditEntry.objects.all()
    for field in ("actor", "action", "outcome"):
        if request.GET.get(field):
            qs = qs.filter(**{field: request.GET[field]})
    page = Paginator(qs, 50).get_page(request.GET.get("page"))
    return render(request, "audit/list.html", {"page": page, "filters": request.GET})
