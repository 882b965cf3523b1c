from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "workflows"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Here, not at the top: these import models, which exist only once the registry is ready.
        from django_q.signals import post_spawn

        # (ours as well)
        from autoscaling.autoscaler import register_demand_provider
        from core.loops import register
        from policies.enforce import register_provider
        from workflows import callables, execute, queue, selectors, sweeps, transitions
        from workflows.models import StepRun

        del callables  # imported for its @callable_step registrations (the built-in python steps)
        # Policies sit below workflows: hand them the count they need for run quotas.
        register_provider("active_runs", selectors.active_runs)
        register_provider("queued_runs", queue.queued_runs)
        # A run that gives back its slot starts the head of the queue waiting for it (after commit);
        # the controller's pass every second is the safety net.
        transitions.on_slot_freed(queue.slot_freed)
        register("tick", "workflows.promote_queued", 1, queue.promote_all)
        # Runs past their flow's deadline open an incident; it resolves once they finish.
        register("monitor", "workflows.deadlines", 1, sweeps.sweep_deadlines)
        # The autoscaler scales on workflow demand: steps queued or running per service.
        register_demand_provider(lambda name: StepRun.objects.filter(
            status__in=(StepRun.Status.QUEUED, StepRun.Status.RUNNING), params__service=name).count())
        # In qcluster worker processes, SIGTERM mid-step releases the step (workflows.execute).
        post_spawn.connect(execute.mark_worker_process, dispatch_uid="workflows.mark_worker_process")
        # Expired leases, approval deadlines, retries whose backoff passed: every tick.
        register("tick", "workflows.sweep", 0, sweeps.sweep_due)
        register("tick", "workflows.requeue_stranded", 10, sweeps.requeue_stranded)
