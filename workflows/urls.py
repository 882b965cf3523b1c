from django.urls import path

from workflows import views

urlpatterns = [
    path("runs/", views.run_list, name="run-list"),
    path("runs/launch/", views.launch_run, name="run-launch"),
    path("runs/<int:run_id>/", views.run_detail, name="run-detail"),
    path("runs/<int:run_id>/cancel/", views.cancel_run, name="run-cancel"),
]
