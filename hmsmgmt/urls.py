from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from accounts.views import LoginView
from console import health_views
from console.metrics import metrics_view
from hmsmgmt.api import api

urlpatterns = [
    # Probes first: unauthenticated, cheap, exempt from the HTTPS redirect (settings).
    path("healthz", health_views.healthz, name="healthz"),
    path("readyz", health_views.readyz, name="readyz"),
    path("", include("console.urls")),
    path("", include("fleet.urls")),
    path("", include("slo.urls")),
    path("", include("autoscaling.urls")),
    path("", include("workflows.urls")),
    path("", include("schedules.urls")),
    path("", include("audit.urls")),
    path("", include("policies.urls")),
    path("login/", LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("mgmt/", api.urls),
    path("metrics", metrics_view, name="metrics"),  # Prometheus (docs/observability.md)
]

if settings.HMS_BENCH:
    from console.bench_views import bare_insert, scale_floor

    urlpatterns.append(path("bench/bare-insert", bare_insert))
    urlpatterns.append(path("bench/scale-floor", scale_floor))
