"""Numbers are finite wherever they enter (core/numbers.py): NaN and ±inf are refused by the
settings forms, the models (so by every action that validates like admin), the REST API, flow
definitions and step params, with a 4xx naming the field and nothing changed; and the probe loop
keeps working whatever one stored setting holds."""

from __future__ import annotations

import json
import math
import time

import pytest
from django import forms
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import connection, models
from ninja import Schema

from console.forms import PARTS, ServiceSettings
from fleet.models import Service
from health import actions as health_actions
from health.models import ProbeSettings
from health.prober import Prober, timing
from slo.models import Objectives
from tests.conftest import api
from workflows.models import StepRun
from workflows.steps import validate_params

NOT_FINITE = ("NaN", "Infinity", "-Infinity", "nan", "inf", "-inf", "1e400")
pytestmark = pytest.mark.django_db


# --- the settings page: every numeric field of its forms ------------------------------------------
NUMERIC_FORM_FIELDS = [name for _attr, form in PARTS for name, field in form.base_fields.items()
                       if isinstance(field, forms.FloatField | forms.IntegerField)]


def _settings_rows(svc: Service) -> list[dict]:
    return [dict(model.objects.filter(pk=svc.pk).values().get())
            for model in (form._meta.model for _attr, form in PARTS)]


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("field", NUMERIC_FORM_FIELDS)
def test_the_settings_form_refuses_non_finite_numbers_naming_the_field(clients, demo, field: str,
                                                                        value: str) -> None:
    svc = Service.objects.get(name="HMS-SVC")
    data = {k: ("" if v is None else v) for k, v in ServiceSettings(svc).fields if not isinstance(v, bool)}
    before = _settings_rows(svc)
    r = clients["alice"].post("/services/HMS-SVC/sla/settings/", data | {field: value})
    assert r.status_code == 400, (field, value)
    assert field.replace("_", " ").encode() in r.content
    assert _settings_rows(svc) == before


def test_the_form_field_list_is_not_empty() -> None:
    assert {"probe_interval_seconds", "probe_timeout_seconds", "uptime_objective", "burn_1h_factor"} <= set(
        NUMERIC_FORM_FIELDS)


# --- the models: every float field a person sets ---------------------------------------------------
MODEL_FLOATS = [(model, f.name) for model in (ProbeSettings, Objectives, StepRun)
                for f in model._meta.fields if isinstance(f, models.FloatField)]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize(("model", "name"), MODEL_FLOATS, ids=[f"{m.__name__}.{n}" for m, n in MODEL_FLOATS])
def test_model_float_fields_refuse_non_finite_values(model: type[models.Model], name: str, value: float) -> None:
    """Comparisons let NaN past min/max validators (NaN < 1 is false): the finite validator does not."""
    obj = model(**{name: value})
    with pytest.raises(ValidationError) as caught:
        obj.clean_fields(exclude=[f.name for f in model._meta.fields if f.name != name])
    assert name in caught.value.message_dict


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_an_action_refuses_a_non_finite_probe_setting_and_changes_nothing(demo, value: float) -> None:
    svc = Service.objects.get(name="HMS-SVC")
    before = ProbeSettings.objects.get(pk=svc.pk).probe_interval_seconds
    with pytest.raises(ValidationError) as caught:
        health_actions.update_settings(svc, {"probe_interval_seconds": value}, actor="system:test")
    assert "probe_interval_seconds" in caught.value.message_dict
    assert ProbeSettings.objects.get(pk=svc.pk).probe_interval_seconds == before


# --- the REST API --------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [*NOT_FINITE[:3], '"NaN"', '"Infinity"', "1e400", "-1e400"])
def test_the_scale_api_refuses_non_finite_instances_naming_the_field(clients, tokens, demo, value: str) -> None:
    svc = Service.objects.get(name="HMS-SVC")
    raw = '{"service": "HMS-SVC", "instances": VALUE}'.replace("VALUE", value)
    r = api(clients["anon"], "post", "/mgmt/scale", raw, tokens["alice"])
    assert r.status_code == 400, r.content[:300]
    assert r.json()["error"] in ("invalid_request", "validation_error") and "instances" in r.json()["detail"]
    assert Service.objects.get(pk=svc.pk).desired_instances == svc.desired_instances


@pytest.mark.parametrize("value", NOT_FINITE[:3])
@pytest.mark.parametrize(("path", "field"), [
    ("/mgmt/services?limit=", "limit"), ("/mgmt/services?offset=", "offset"),
    ("/mgmt/workflows?page=", "page"), ("/mgmt/workflows?per_page=", "per_page")])
def test_numeric_query_parameters_refuse_non_finite_values(clients, tokens, demo, path: str, field: str,
                                                           value: str) -> None:
    r = api(clients["anon"], "get", path + value, None, tokens["alice"])
    assert r.status_code == 400 and field in r.json()["detail"], r.content[:300]


@pytest.mark.parametrize("value", NOT_FINITE[:3])
def test_run_data_refuses_non_finite_numbers_naming_where(clients, tokens, demo, value: str) -> None:
    from workflows.models import WorkflowRun

    runs = WorkflowRun.objects.count()
    r = api(clients["anon"], "post", "/mgmt/workflows",
            '{"flowId": "exportPatientData", "data": {"user": 1, "ratio": VALUE}}'.replace("VALUE", value),
            tokens["alice"])
    assert r.status_code == 400 and "data.ratio" in r.json()["detail"] and value in r.json()["detail"]
    assert WorkflowRun.objects.count() == runs


def test_no_api_input_schema_takes_a_float_that_allows_nan() -> None:
    """A float field in a request schema must be core.numbers.FiniteFloat (allow_inf_nan=False)."""
    import hmsmgmt.api  # noqa: F401  (every router imported)

    def subclasses(cls: type) -> list[type]:
        return [c for s in cls.__subclasses__() for c in (s, *subclasses(s))]

    inputs = [c for c in subclasses(Schema) if c.__name__.endswith("In") and c.__module__.split(".")[0] in
              {"fleet", "workflows", "slo", "health", "audit", "console", "autoscaling", "policies", "accounts"}]
    assert inputs  # ScaleIn, StartIn, ApproveIn...
    for schema in inputs:
        for name, info in schema.model_fields.items():
            if info.annotation is float or info.annotation == float | None:
                assert any(getattr(m, "allow_inf_nan", None) is False for m in info.metadata), (schema, name)


# --- flow definitions and step params ---------------------------------------------------------------
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_step_params_refuse_non_finite_numbers(value: float) -> None:
    with pytest.raises(ValueError, match="params.seconds"):
        validate_params("sleep", {"seconds": value})
    with pytest.raises(ValueError, match="params.instances"):
        validate_params("scale", {"service": "s", "instances": value})


@pytest.mark.parametrize("text", [".nan", ".inf", "-.inf"])
def test_a_flow_file_with_a_non_finite_number_is_refused(tmp_path, text: str) -> None:
    from workflows.models import WorkflowDefinition

    path = tmp_path / "flow.yaml"
    path.write_text(f"slug: napper\nsteps:\n  - name: nap\n    action: sleep\n    params: {{seconds: {text}}}\n")
    with pytest.raises(CommandError, match="seconds"):
        call_command("load_flows", str(path))
    path.write_text(f"slug: napper\nsteps:\n  - name: nap\n    action: noop\n    backoff: {text}\n")
    with pytest.raises(CommandError, match="backoff"):
        call_command("load_flows", str(path))
    assert not WorkflowDefinition.objects.filter(slug="napper").exists()


# --- the probe loop ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("interval", "timeout", "expected"), [
    (math.nan, 1.0, (5.0, 1.0)), (math.inf, 1.0, (5.0, 1.0)), (-math.inf, 1.0, (5.0, 1.0)),
    (2.0, math.nan, (2.0, 1.0)), (2.0, math.inf, (2.0, 1.0)), (2.0, -math.inf, (2.0, 1.0)),
    (None, None, (5.0, 1.0)), (0.5, 0.2, (1.0, 0.2)), (10.0, 3.0, (10.0, 3.0)),
])
def test_probe_timing_is_always_finite(interval, timeout, expected) -> None:
    assert timing(interval, timeout) == expected


@pytest.mark.django_db(transaction=True)
def test_one_bad_probe_setting_does_not_break_the_probe_batch() -> None:
    """Written around every validator (PostgreSQL stores NaN and infinity; SQLite turns NaN into
    NULL, which the column refuses): the prober still schedules every instance."""
    from fleet.models import Instance

    if connection.vendor != "postgresql":
        pytest.skip("SQLite cannot store NaN in a float column")
    good = Service.objects.create(name="good", command="true")
    bad = Service.objects.create(name="bad", command="true")
    for svc in (good, bad):
        ProbeSettings.objects.get_or_create(service=svc)
        Instance.objects.create(service=svc, driver="process", state="running", host="127.0.0.1", port=9)
    ProbeSettings.objects.filter(pk=bad.pk).update(probe_interval_seconds=math.inf, probe_timeout_seconds=math.nan)
    prober = Prober()
    try:
        prober.refresh()
        deadline = time.monotonic() + 5
        while len(prober.io.targets) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        targets = {t.service_id: t for t in prober.io.targets.values()}
        assert set(targets) == {good.pk, bad.pk}
        assert all(math.isfinite(t.interval) and math.isfinite(t.timeout) for t in targets.values())
    finally:
        prober.close()


def test_safejson_names_where_a_non_finite_number_is() -> None:
    from core import safejson

    with pytest.raises(safejson.UnstorableJSON, match=r"'a\.b\[1\]' \(NaN\)"):
        safejson.loads(json.dumps({"a": {"b": [1, math.nan]}}))
