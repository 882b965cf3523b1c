from django.urls import path

from schedules import views

urlpatterns = [
    path("flows/<str:flow_id>/", views.flow_detail, name="flow-detail"),
    path("flows/<str:flow_id>/schedules/", views.schedule_create, name="schedule-create"),
    path("schedules/<int:schedule_id>/edit/", views.schedule_edit, name="schedule-edit"),
    path("schedules/<int:schedule_id>/pause/", views.schedule_pause, name="schedule-pause"),
    path("schedules/<int:schedule_id>/resume/", views.schedule_resume, name="schedule-resume"),
    path("schedules/<int:schedule_id>/delete/", views.schedule_delete, name="schedule-delete"),
]
