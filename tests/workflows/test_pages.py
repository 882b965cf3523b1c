"""Pages: flows with a launch form, runs list filters, run detail partial and its buttons."""

from __future__ import annotations

import pytest

from tests.workflows.helpers import drain, make_flow, py, step
from workflows import actions
from workflows.models import StepRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def gated(personas, django_capture_on_commit_callbacks):
    flow = make_flow("gated", [step("gate", action="approval", params={"prompt": "Ship?"}), step("b", "gate")])
    with django_capture_on_commit_callbacks(execute=True):
        run = actions.start_run(flow, {}, actor=personas["bob"]).run  # alice approves: four eyes
    return drain(run)


def test_flows_page_lists_flows_with_a_launch_form(clients, gated) -> None:
    html = clients["alice"].get("/flows/").content.decode()
    assert 'data-flow="gated"' in html and 'name="flowId"' in html and "gate → b" in html


def test_launch_refuses_data_that_is_not_an_object(clients, gated) -> None:
    resp = clients["alice"].post("/runs/launch/", {"flowId": "gated", "data": "[1]"}, follow=True)
    assert "must be a JSON object" in resp.content.decode()


def test_run_page_polls_while_active_and_offers_approval(clients, gated) -> None:
    html = clients["alice"].get(f"/runs/{gated.pk}/").content.decode()
    assert 'hx-trigger="every 1s' in html and "Ship?" in html and 'value="true"' in html
    partial = clients["alice"].get(f"/runs/{gated.pk}/", HTTP_HX_REQUEST="true").content.decode()
    assert partial.startswith('<div id="run"') and "<html" not in partial


def test_approving_on_the_page(clients, gated, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        clients["alice"].post(f"/runs/{gated.pk}/steps/gate/approve/", {"approve": "true"})
    assert StepRun.objects.get(run=gated, name="gate").status == "succeeded"
    run = drain(gated)
    html = clients["alice"].get(f"/runs/{run.pk}/").content.decode()
    assert run.status == "succeeded" and "hx-trigger" not in html  # finished: no more polling


def test_outsiders_cannot_decide(clients, gated) -> None:
    assert clients["dave"].post(f"/runs/{gated.pk}/steps/gate/approve/", {"approve": "true"}).status_code == 404
    assert StepRun.objects.get(run=gated, name="gate").status == "waiting"


def test_a_failed_run_offers_retry_and_the_list_filters(clients, personas, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        run = actions.start_run(make_flow("bad", [py("a", "fail")]), {}, actor=personas["alice"]).run
    drain(run)
    assert "Retry from the failed step" in clients["alice"].get(f"/runs/{run.pk}/").content.decode()
    listing = clients["alice"].get("/runs/?status=failed", HTTP_HX_REQUEST="true").content.decode()
    assert f"#{run.pk}" in listing
    assert f"#{run.pk}" not in clients["alice"].get("/runs/?status=succeeded").content.decode()
