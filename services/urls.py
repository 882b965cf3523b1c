from django.urls import path

from services import views

urlpatterns = [
    path("services/<str:name>/", views.service_detail, name="service-detail"),
    path("services/<str:name>/scale/", views.scale_service, name="service-scale"),
]

# SLA monitoring, incidents, alerts and the autoscaler's explanation (services/views_sla.py).
from services import views_sla  # noqa: E402

urlpatterns += [
    path("sla/", views_sla.sla_overview, name="sla-overview"),
    path("sla/channels/", views_sla.channel_create, name="sla-channel-create"),
    path("sla/channels/<int:channel_id>/delete/", views_sla.channel_delete, name="sla-channel-delete"),
    path("incidents/<int:incident_id>/ack/", views_sla.acknowledge, name="incident-ack"),
    path("maintenance/<int:window_id>/end/", views_sla.maintenance_end, name="maintenance-end"),
    path("services/<str:name>/sla/", views_sla.service_sla, name="service-sla"),
    path("services/<str:name>/sla/settings/", views_sla.settings_update, name="service-sla-settings"),
    path("services/<str:name>/autoscale/", views_sla.autoscale_fragment, name="service-autoscale"),
    path("services/<str:name>/maintenance/", views_sla.maintenance_create, name="service-maintenance"),
    path("services/<str:name>/override/", views_sla.override_create, name="service-override"),
    path("services/<str:name>/override/clear/", views_sla.override_clear, name="service-override-clear"),
]
