"""The http step calls the fleet's own instances (addresses written by the drivers, never by a
flow's author) and stays on them: a redirect is not followed, so a managed service cannot make the
worker fetch another address (the metadata service, an admin port) and put the answer in the run."""

from __future__ import annotations

import pytest

from fleet.models import Instance
from tests.conftest import service_with
from tests.core.test_outbound import Server
from workflows.steps import StepContext, http, validate_params


@pytest.mark.django_db
def test_the_http_step_does_not_follow_a_redirect() -> None:
    inner = Server(host="127.0.0.2", body=b'{"secret": "from the inner service"}')
    outer = Server(status=302, location=inner.url, body=b"")
    try:
        svc = service_with("web")
        Instance.objects.create(service=svc, driver="process", state="running", host="127.0.0.1", port=outer.port,
                                health="up")
        ctx = StepContext(run_id=1, step_name="call", params={"service": "web", "path": "/work"}, data={},
                          outputs={}, timeout=5, attempt=1)
        out = http(ctx)
    finally:
        inner.close()
        outer.close()
    assert out["status"] == 302 and len(outer.received) == 1 and not inner.received
    assert "secret" not in str(out)


def test_the_http_step_takes_a_service_and_a_path_never_a_url() -> None:
    for params in ({"service": "web", "url": "http://169.254.169.254/"}, {"service": "web", "path": "http://x/"},
                   {"service": "web", "path": "@169.254.169.254/"}):
        with pytest.raises(ValueError):
            validate_params("http", params)
