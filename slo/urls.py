from django.urls import path

from slo import views

urlpatterns = [
    path("sla/", views.sla_overview, name="sla-overview"),
    path("sla/channels/", views.channel_create, name="sla-channel-create"),
    path("sla/channels/<int:channel_id>/delete/", views.channel_delete, name="sla-channel-delete"),
    path("incidents/<int:incident_id>/ack/", views.acknowledge, name="incident-ack"),
]
