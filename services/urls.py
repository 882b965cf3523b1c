from django.urls import path

from services import views

urlpatterns = [
    path("services/<str:name>/", views.service_detail, name="service-detail"),
    path("services/<str:name>/scale/", views.scale_service, name="service-scale"),
]
