from django.contrib import admin

from console.models import WorkerBeat
from core.admin import ReadOnlyAdmin


@admin.register(WorkerBeat)
class WorkerBeatAdmin(ReadOnlyAdmin):
    list_display = ("cluster", "host", "pid", "started_at", "beat_at", "busy", "tasks")
