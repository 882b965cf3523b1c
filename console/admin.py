from django.contrib import admin
from django_q import admin as q_admin
from django_q.models import Failure, OrmQ, Schedule, Success

from console.models import WorkerBeat
from core.admin import ReadOnlyAdmin, SuperuserOnlyAdmin


@admin.register(WorkerBeat)
class WorkerBeatAdmin(ReadOnlyAdmin):
    list_display = ("cluster", "host", "pid", "started_at", "beat_at", "busy", "tasks")


# django-q2's admin: a schedule names any importable function with any arguments, and "resubmit"
# runs a stored task again: both are code execution as the worker, so superusers only (a staff user
# with django_q model permissions gets 403 and does not see the section).
def _superuser_only(model: type, base: type) -> None:
    if not admin.site.is_registered(model):
        return  # OrmQ's admin exists only with the ORM broker
    admin.site.unregister(model)
    admin.site.register(model, type(f"SuperuserOnly{base.__name__}", (SuperuserOnlyAdmin, base), {}))


for _model, _base in ((Schedule, q_admin.ScheduleAdmin), (Success, q_admin.TaskAdmin),
                      (Failure, q_admin.FailAdmin), (OrmQ, q_admin.QueueAdmin)):
    _superuser_only(_model, _base)
