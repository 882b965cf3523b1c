from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "console"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Here, not at the top: django_q's signals import its settings.
        from django_q.signals import post_execute_in_worker, post_spawn, pre_execute

        from console import workers  # here: it imports the models, which exist only once the registry is ready

        post_spawn.connect(workers.on_spawn, dispatch_uid="console.worker_beat")
        pre_execute.connect(workers.on_start, dispatch_uid="console.worker_busy")
        post_execute_in_worker.connect(workers.on_finish, dispatch_uid="console.worker_done")
