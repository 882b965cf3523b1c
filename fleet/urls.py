from django.urls import path

from fleet import views

urlpatterns = [
    path("services/<str:name>/scale/", views.scale_service, name="service-scale"),
]
