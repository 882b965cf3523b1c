from django.urls import path

from console import service_pages, views

urlpatterns = [
    path("", views.overview, name="overview"),
    path("system/", views.system_page, name="system"),
    path("services/<str:name>/", service_pages.service_detail, name="service-detail"),
    path("services/<str:name>/sla/", service_pages.service_sla, name="service-sla"),
    path("services/<str:name>/sla/settings/", service_pages.settings_update, name="service-sla-settings"),
    path("services/<str:name>/maintenance/", service_pages.maintenance_create, name="service-maintenance"),
    path("maintenance/<int:window_id>/end/", service_pages.maintenance_end, name="maintenance-end"),
    path("services/<str:name>/override/", service_pages.override_create, name="service-override"),
    path("services/<str:name>/override/clear/", service_pages.override_clear, name="service-override-clear"),
]
