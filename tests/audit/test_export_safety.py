"""CSV cells a spreadsheet would run as formulas are neutralised; client headers are capped."""

from __future__ import annotations

import csv
import io

import pytest
from django.db import transaction

from audit.actions import record
from audit.context import reset_context, set_context
from audit.export import csv_lines, rows
from audit.models import AuditEntry

pytestmark = pytest.mark.django_db


def test_formula_cells_are_prefixed_and_numbers_left_alone() -> None:
    token = set_context(user_agent="=HYPERLINK(\"http://x\")", ip="127.0.0.1", request_id="", token_id=None)
    try:
        with transaction.atomic():
            record("x.y", actor="@evil", target_type="t", target_id="-1+2", target_repr="\tcmd",
                   payload={"a": 1})
    finally:
        reset_context(token)
    (header, line) = list(csv.reader(io.StringIO("".join(csv_lines(rows(AuditEntry.objects.all()))))))
    cell = dict(zip(header, line, strict=True))
    assert cell["user_agent"].startswith("'=") and cell["actor"] == "'@evil"
    assert cell["target_id"] == "'-1+2" and cell["target_repr"] == "'\tcmd"
    assert cell["payload"] == '{"a": 1}' and not any(v[:1] in "=+-@\t\r" for v in line if v)


def test_client_headers_are_capped_when_stored(client) -> None:
    client.get("/mgmt/services", HTTP_USER_AGENT="A" * 10_000 + "\x00", HTTP_AUTHORIZATION="Bearer hms_x_y")
    entry = AuditEntry.objects.latest("id")
    assert len(entry.user_agent) <= 256 and set(entry.user_agent) == {"A"}
