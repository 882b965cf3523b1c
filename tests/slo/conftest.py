"""The alert tests' receivers (webhook servers, a real Alertmanager) listen on 127.0.0.1, which the
outbound guard refuses unless the operator allows it: these tests are that operator."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _allow_loopback_receivers(settings) -> None:
    settings.HMS_OUTBOUND_ALLOW = ["127.0.0.1"]
