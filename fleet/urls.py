from django.urls import path

from fleet import node_views, views

urlpatterns = [
    path("services/<str:name>/scale/", views.scale_service, name="service-scale"),
    path("nodes/", node_views.nodes_page, name="nodes"),
    path("nodes/<str:hostname>/availability/", node_views.node_availability, name="node-availability"),
]
