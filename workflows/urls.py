from django.urls import path

from workflows import views

urlpatterns = [
    path("flows/", views.flow_list, name="flow-list"),
    path("runs/", views.run_list, name="run-list"),
    path("runs/launch/", views.launch_run, name="run-launch"),
    path("runs/bulk/", views.bulk_runs, name="run-bulk"),
    path("runs/<int:run_id>/", views.run_detail, name="run-detail"),
    path("runs/<int:run_id>/cancel/", views.cancel_run, name="run-cancel"),
    path("runs/<int:run_id>/retry/", views.retry_run, name="run-retry"),
    path("runs/<int:run_id>/pause/", views.pause_run, name="run-pause"),
    path("runs/<int:run_id>/resume/", views.resume_run, name="run-resume"),
    path("runs/<int:run_id>/steps/<str:name>/approve/", views.approve_step, name="run-approve"),
]
