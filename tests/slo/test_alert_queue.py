"""Alerts are never lost: each delivery is a row written before sending, claimed before it is
sent (a second task for it does nothing), re-sent by the controller when its task was lost, and
run on a worker pool of its own, so workers busy with long steps never hold a webhook back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone

from slo import actions as slo_actions
from slo import alerts
from slo.models import AlertChannel, AlertDelivery, Incident
from tests.conftest import service_with, wait_for
from tests.slo.test_sla import Hook
from tests.workflows.helpers import make_flow, step
from workflows import actions as workflow_actions
from workflows.models import StepRun


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


def incident_with_delivery(hook: Hook) -> AlertDelivery:
    svc = service_with("web")
    slo_actions.save_alert_channel(AlertChannel(name="ops", kind="webhook", target=hook.url), actor="system:test")
    slo_actions.open_incident(svc, kind=Incident.Kind.AVAILABILITY, severity=Incident.Severity.PAGE, title="down",
                              evidence={})
    return AlertDelivery.objects.get()


@pytest.mark.django_db(transaction=True)
def test_a_claimed_delivery_is_sent_once(hook: Hook) -> None:
    d = incident_with_delivery(hook)  # written before any send (its task may never have run)
    AlertDelivery.objects.filter(pk=d.pk).update(claimed_at=timezone.now())  # another worker has it
    assert alerts.deliver(d.pk) == "skipped" and not hook.received
    AlertDelivery.objects.filter(pk=d.pk).update(claimed_at=timezone.now() - timedelta(hours=1))  # that worker died
    assert alerts.deliver(d.pk) == "sent" and len(hook.received) == 1
    assert alerts.deliver(d.pk) == "skipped" and len(hook.received) == 1


@pytest.mark.django_db(transaction=True)
def test_the_controller_re_sends_a_delivery_whose_task_was_lost(hook: Hook, monkeypatch) -> None:
    from django_q.conf import Conf

    d = incident_with_delivery(hook)  # its task queued for a worker pool that never takes it
    monkeypatch.setattr(Conf, "SYNC", True)  # the re-sent task runs here, now
    assert alerts.resend_stranded() == 0  # just written: its task may still be on the way
    AlertDelivery.objects.filter(pk=d.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    assert alerts.resend_stranded() == 1
    assert AlertDelivery.objects.get(pk=d.pk).status == AlertDelivery.Status.SENT and len(hook.received) == 1
    assert alerts.resend_stranded() == 0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_webhook_arrives_while_every_workflow_worker_is_busy(transactional_db, personas, spawn,
                                                                hook: Hook) -> None:
    flow = make_flow("long", [step("nap", action="sleep", params={"seconds": 60}, timeout=120)])
    spawn("qcluster", HMS_Q_WORKERS="1")  # the workflow pool: one worker, about to be busy for a minute
    spawn("qcluster", Q_CLUSTER_NAME="alerts", HMS_OUTBOUND_ALLOW="127.0.0.1")  # the alerts pool
    run = workflow_actions.start_run(flow, {}, actor=personas["alice"]).run
    wait_for(lambda: StepRun.objects.filter(run=run, status=StepRun.Status.RUNNING).exists(), timeout=30,
             message="the workflow worker busy with its long step")
    opened = time.monotonic()
    incident_with_delivery(hook)
    wait_for(lambda: hook.received, timeout=5, interval=0.05, message="the webhook within 5 s")
    print(f"webhook after {time.monotonic() - opened:.2f} s with the workflow pool busy")
    assert StepRun.objects.get(run=run).status == StepRun.Status.RUNNING  # still busy all along


@pytest.mark.django_db(transaction=True)
def test_a_mail_server_that_never_answers_fails_the_delivery_in_bounded_time(settings) -> None:
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)  # accepts (the kernel does) and never says a word
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", server.getsockname()[1]
    settings.EMAIL_TIMEOUT = 1
    settings.HMS_ALERT_ATTEMPTS, settings.HMS_ALERT_BACKOFF_SECONDS = 2, 0.1
    try:
        svc = service_with("web")
        slo_actions.save_alert_channel(AlertChannel(name="mail", kind="email", target="ops@example.org"),
                                       actor="system:test")
        slo_actions.open_incident(svc, kind=Incident.Kind.AVAILABILITY, severity=Incident.Severity.PAGE,
                                  title="down", evidence={})
        started = time.monotonic()
        assert alerts.deliver(AlertDelivery.objects.get().pk) == "failed"
        assert time.monotonic() - started < 10  # 2 attempts × a 1 s timeout, not forever
        assert "timed out" in AlertDelivery.objects.get().last_error
    finally:
        server.close()
