from django.urls import path

from autoscaling import views

urlpatterns = [
    path("services/<str:name>/autoscale/", views.autoscale_fragment, name="service-autoscale"),
]
