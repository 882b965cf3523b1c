from django.contrib import admin

from controller.models import LoopBeat
from core.admin import ReadOnlyAdmin


@admin.register(LoopBeat)
class LoopBeatAdmin(ReadOnlyAdmin):
    list_display = ("loop", "leader", "since", "host", "pid", "started_at", "beat_at", "last_pass_ms", "passes")
