from django.urls import path

from policies import views

urlpatterns = [
    path("policies/preflight/", views.preflight, name="policy-preflight"),
]
