from django.apps import AppConfig


class SchedulesConfig(AppConfig):
    name = "schedules"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Here, not at the top: the job imports models, which exist only once the registry is ready.
        from core.loops import register
        from schedules import flowfile, jobs
        from workflows.flowfile import register_section

        register_section("schedules", flowfile.parse, flowfile.apply)  # load_flows' `schedules:`

        # The "schedules" loop (every HMS_SCHEDULE_POLL_MS) fires what is due and releases held fires.
        register("schedules", "schedules.fire_due", 0, jobs.fire_due)
        register("schedules", "schedules.prune", 60, jobs.prune)
