"""A database from before the layout split (issue 11) migrates forward without losing anything.

The split moved the `services` app's models to fleet, health, slo and autoscaling, and `hmsmgmt`'s
to accounts, by state-only hand-overs (SeparateDatabaseAndState), a RunPython that relabels their
django_content_type rows, and table/index renames. A test database is always created after the
split, so nothing else exercises that path with data in it. This module takes the test database
back to the pre-split migration state, fills the old tables (services_*, hmsmgmt_*) through the
historical models as an old installation would have them, with its content types under the old
labels, model-level and django-guardian object grants on those content types and a sealed audit
chain, then migrates forward to the current leaves and checks, with the current models:

- every row of every moved table, and of an unmoved app (workflows), is there with the same ids
  and values, under the new table names, and new rows do not collide with the old ids;
- each moved content type keeps its id under its new app label, none is left under the old ones;
- permissions keep their ids; group, user and object grants still resolve (has_perm, get_perms);
- the audit chain still verifies (verify_database, `manage.py audit_verify`, a checkpoint taken
  before the migration), with the same entries, and a service's history still finds its entries;
- no services_* or hmsmgmt_* table, and no old index name, is left.

The database is migrated to the leaves again whatever happens (finally), so later tests see the
normal schema; the transactional teardown flush then empties it (tests/conftest.py drops the
audit triggers first).
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.apps.registry import Apps
from django.core.management import call_command
from django.db import connection, models, transaction
from django.db.migrations.executor import MigrationExecutor

# The last migrations before the split, and the apps that did not exist before it.
# policies 0003 (issue 14) points its policies at fleet's services: before the split it was at 0002.
PRE_SPLIT = [("services", "0002_sla_probes_incidents_autoscale"), ("hmsmgmt", "0004_operator_run_permissions"),
             ("policies", "0002_help_texts_and_minimums")]
NEW_APPS = ("fleet", "health", "slo", "autoscaling", "accounts")
OLD_APPS = ("services", "hmsmgmt")

# (old app label, new app label, model name): every model the split moved.
MOVED = [
    ("services", "fleet", "Service"),
    ("services", "fleet", "Instance"),
    ("services", "health", "ProbeResult"),
    ("services", "health", "ProbeRollup"),
    ("services", "health", "MaintenanceWindow"),
    ("services", "slo", "Incident"),
    ("services", "slo", "AlertChannel"),
    ("services", "slo", "AlertDelivery"),
    ("services", "autoscaling", "AutoscaleDecision"),
    ("services", "autoscaling", "ScaleOverride"),
    ("hmsmgmt", "accounts", "ApiToken"),
    ("hmsmgmt", "accounts", "LoginFailure"),
]
# Models whose app did not move: their rows must come through untouched too.
UNMOVED = [("workflows", "WorkflowDefinition"), ("workflows", "WorkflowRun"), ("workflows", "StepRun")]
# Index renames done by the new apps' 0002 (table, old name, new name).
RENAMED_INDEXES = [
    ("instance", "services_in_service_5e7809_idx", "fleet_insta_service_72e492_idx"),
    ("proberesult", "services_pr_service_86e9c2_idx", "health_prob_service_4ea2d8_idx"),
    ("proberesult", "services_pr_at_8b365f_idx", "health_prob_at_075de7_idx"),
    ("incident", "services_in_service_b70949_idx", "slo_inciden_service_55cdea_idx"),
    ("autoscaledecision", "services_au_service_3c84fe_idx", "autoscaling_service_a41696_idx"),
]
NEW_TABLE = {"instance": "fleet_instance", "proberesult": "health_proberesult", "incident": "slo_incident",
             "autoscaledecision": "autoscaling_autoscaledecision"}

T0 = datetime(2026, 11, 20, 8, 30, 15, 123456, tzinfo=UTC)
SERVICE_AUDIT_ACTIONS = ["service.create", "service.scale", "service.scale", "service.update"]


def pre_split_targets(leaves: list[tuple[str, str]]) -> list[tuple[str, str | None]]:
    """Old apps at their last pre-split migration, new apps unapplied, everything else at its leaf."""
    pinned = {app for app, _ in PRE_SPLIT}
    others = [node for node in leaves if node[0] not in (*NEW_APPS, *OLD_APPS, *pinned)]
    return [*PRE_SPLIT, *[(app, None) for app in NEW_APPS], *others]


def table_names() -> set[str]:
    with connection.cursor() as cursor:
        return set(connection.introspection.table_names(cursor))


def index_names(table: str) -> set[str]:
    with connection.cursor() as cursor:
        return set(connection.introspection.get_constraints(cursor, table))


def count_rows(table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {connection.ops.quote_name(table)}")
        return cursor.fetchone()[0]


def rows(model: type[models.Model]) -> list[dict[str, Any]]:
    return list(model.objects.order_by("pk").values())


def relabel_to_pre_split(apps: Apps) -> None:
    """An old database has the moved models' content types under the old labels, with their default
    permissions. The test database was made after the split; the backward migration (the reverse of
    core.migration_ops.move_content_types) normally relabels them already. Whatever it did, leave the
    rows under the old labels (same rows, same ids, permissions attached), none under the new apps."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    for old, new, name in MOVED:
        model = name.lower()
        if not ContentType.objects.filter(app_label=old, model=model).exists():
            ContentType.objects.filter(app_label=new, model=model).update(app_label=old)
        ct, _ = ContentType.objects.get_or_create(app_label=old, model=model)
        for action in ("add", "change", "delete", "view"):
            Permission.objects.get_or_create(content_type=ct, codename=f"{action}_{model}",
                                             defaults={"name": f"Can {action} {model}"})
    ContentType.objects.filter(app_label__in=NEW_APPS).delete()  # none existed before the split
    # Permissions added after the split (issue 14's change_command_service) were not in an old database.
    Permission.objects.filter(content_type__app_label="services", codename="change_command_service").delete()


def populate(apps: Apps) -> dict[str, Any]:
    """Rows in every moved table (and in workflows), grants on the old content types."""
    get = apps.get_model
    ContentType, Permission = get("contenttypes", "ContentType"), get("auth", "Permission")
    User, Group = get("auth", "User"), get("auth", "Group")

    service_ct = ContentType.objects.get(app_label="services", model="service")
    view = Permission.objects.get(content_type=service_ct, codename="view_service")
    scale, _ = Permission.objects.get_or_create(content_type=service_ct, codename="scale_service",
                                                defaults={"name": "Can scale service"})
    drain = Permission.objects.create(content_type=service_ct, codename="drain_service", name="Can drain service")

    Service, Instance = get("services", "Service"), get("services", "Instance")
    api = Service.objects.create(name="legacy-api", description="from before the split", port=8081,
                                 desired_instances=2, spec_version=3, last_scaled_at=T0, autoscale_enabled=True,
                                 min_instances=2, max_instances=6, target_latency_ms=250, uptime_objective=99.5)
    batch = Service.objects.create(name="legacy-batch", driver="docker", image="example/batch:1", port=9000)
    i1 = Instance.objects.create(service=api, driver="process", ref="4242", host="127.0.0.1", port=18081,
                                 state="running", health="up", spec_version=3, started_at=T0, healthy_at=T0,
                                 probe_successes=12, last_probe_at=T0, last_probe_ms=12.5, cpu_percent=3.25,
                                 memory_bytes=52_428_800)
    i2 = Instance.objects.create(service=api, driver="process", ref="4243", host="127.0.0.1", port=18082,
                                 state="exited", health="down", restarts=1, exit_reason="exit code 1",
                                 stopped_at=T0 + timedelta(minutes=5), probe_failures=3)
    Instance.objects.create(service=batch, driver="docker", ref="c0ffee", state="stopped")

    ProbeResult = get("services", "ProbeResult")
    ProbeResult.objects.create(service=api, instance=i1, at=T0, ok=True, latency_ms=11.0, status_code=200)
    ProbeResult.objects.create(service=api, instance=i2, at=T0 + timedelta(seconds=5), ok=False, latency_ms=1000.0,
                               error="timed out")
    ProbeResult.objects.create(service=api, instance=i1, at=T0 + timedelta(seconds=10), ok=True, latency_ms=9.5,
                               status_code=200, in_maintenance=True)
    get("services", "ProbeRollup").objects.create(service=api, minute=T0.replace(second=0, microsecond=0), total=3,
                                                  up=2, down=1, slow=1, hist=[0, 2, 0, 1], p50_ms=11.0, p95_ms=900.0,
                                                  max_ms=1000.0)
    get("services", "MaintenanceWindow").objects.create(service=api, starts_at=T0, ends_at=T0 + timedelta(hours=1),
                                                        reason="kernel update", created_by="olga")
    incident = get("services", "Incident").objects.create(
        service=api, kind="availability", severity="page", status="acknowledged", title="legacy-api is down",
        evidence={"window": "5m", "burn_rate": 14.4, "probes": [1, 0, 0]}, opened_at=T0,
        acknowledged_at=T0 + timedelta(minutes=2), acknowledged_by="olga")
    channel = get("services", "AlertChannel").objects.create(name="ops-hook", kind="webhook",
                                                             target="https://hooks.example.org/ops", service=api)
    get("services", "AlertChannel").objects.create(name="all-mail", kind="email", target="ops@example.org",
                                                   enabled=False)
    get("services", "AlertDelivery").objects.create(incident=incident, channel=channel, event="opened", status="sent",
                                                    attempts=2, response_status=204, payload={"title": incident.title},
                                                    sent_at=T0 + timedelta(seconds=30))
    get("services", "AutoscaleDecision").objects.create(service=api, at=T0, current=2, raw=5, desired=4, applied=True,
                                                        summary="cpu 91% > 70%", inputs={"cpu": 91.0},
                                                        clipped=["scale_up_max_step"])
    get("services", "ScaleOverride").objects.create(service=api, owner="olga", instances=3, reason="launch day",
                                                    created_at=T0, expires_at=T0 + timedelta(days=1))

    olga = User.objects.create(username="olga", email="olga@example.org", password="!")
    pete = User.objects.create(username="pete", email="pete@example.org", password="!")
    scalers = Group.objects.create(name="legacy-scalers")
    scalers.permissions.add(scale)
    pete.groups.add(scalers)
    olga.user_permissions.add(drain)
    get("guardian", "UserObjectPermission").objects.create(user=olga, permission=scale, content_type=service_ct,
                                                           object_pk=str(api.pk))
    get("guardian", "GroupObjectPermission").objects.create(group=scalers, permission=view, content_type=service_ct,
                                                            object_pk=str(api.pk))
    get("hmsmgmt", "ApiToken").objects.create(user=olga, name="ci", prefix="hms_legacy1", digest="ab" * 32,
                                              expires_at=T0 + timedelta(days=90), last_used_at=T0)
    get("hmsmgmt", "LoginFailure").objects.create(username="olga", ip="192.0.2.7", at=T0)
    get("hmsmgmt", "LoginFailure").objects.create(username="mallory", ip="192.0.2.66", at=T0 + timedelta(seconds=1))

    flow = get("workflows", "WorkflowDefinition").objects.create(slug="legacyFlow", name="Legacy flow",
                                                                 steps=[{"name": "a", "action": "noop"}])
    run = get("workflows", "WorkflowRun").objects.create(definition=flow, flow_slug=flow.slug, actor=olga,
                                                         status="succeeded", data={"k": "v"}, started_at=T0,
                                                         finished_at=T0 + timedelta(seconds=3))
    StepRun = get("workflows", "StepRun")
    StepRun.objects.create(run=run, name="a", action="noop", status="succeeded", attempts=1, output={"ok": True})
    StepRun.objects.create(run=run, name="b", action="noop", depends_on=["a"], status="succeeded", attempts=2,
                           retries=1)
    return {"api": api.pk, "batch": batch.pk, "token": "hms_legacy1", "olga": olga.pk, "pete": pete.pk,
            "group": scalers.pk, "perms": {"view": view.pk, "scale": scale.pk, "drain": drain.pk}}


def write_audit(ids: dict[str, Any]) -> None:
    """Entries as the old code wrote them: target types under the old labels."""
    from audit.actions import record

    for n, action in enumerate(SERVICE_AUDIT_ACTIONS):
        with transaction.atomic():
            record(action, actor="olga", target_type="services.service", target_id=ids["api"],
                   target_repr="legacy-api", payload={"n": n, "from": n, "to": n + 1})
    with transaction.atomic():
        record("token.create", actor="olga", target_type="hmsmgmt.apitoken", target_id="1", payload={"name": "ci"})
        record("service.scale", actor="system:controller", target_type="services.service", target_id=ids["batch"],
               payload={"from": 0, "to": 0})


@pytest.mark.django_db(transaction=True)
def test_pre_split_database_migrates_forward_keeping_rows_grants_and_audit_chain(db_owner: None) -> None:
    # db_owner: migrations are the tables' owner's job (in the two-role run the test acts as it).
    from audit import events
    from audit.checkpoints import check_log, write_checkpoint
    from audit.models import AuditEntry
    from audit.sealer import seal_pending
    from audit.verify import verify_database

    executor = MigrationExecutor(connection)
    leaves = executor.loader.graph.leaf_nodes()
    targets = pre_split_targets(leaves)
    try:
        # --- back to the layout of an old installation ---------------------------------------------
        plan = executor.migration_plan(targets)
        assert plan and all(backwards for _, backwards in plan), "expected an unapply-only plan"
        executor.migrate(targets)
        executor.loader.build_graph()
        tables = table_names()
        assert {"services_service", "services_instance", "hmsmgmt_apitoken", "hmsmgmt_loginfailure"} <= tables
        assert not tables & {"fleet_service", "fleet_instance", "health_proberesult", "accounts_apitoken"}
        assert "services_in_service_5e7809_idx" in index_names("services_instance")

        apps = executor.loader.project_state([t for t in targets if t[1] is not None]).apps
        for app in NEW_APPS:
            with pytest.raises(LookupError):
                apps.get_app_config(app)
        with transaction.atomic():
            relabel_to_pre_split(apps)
            ids = populate(apps)
        write_audit(ids)
        seal_pending()
        checkpoint = write_checkpoint(export=False)

        # --- what the old database holds ----------------------------------------------------------
        ContentType, Permission = apps.get_model("contenttypes", "ContentType"), apps.get_model("auth", "Permission")
        before_rows = {(old, name): rows(apps.get_model(old, name)) for old, _, name in MOVED}
        before_rows.update({(app, name): rows(apps.get_model(app, name)) for app, name in UNMOVED})
        assert all(before_rows.values()), "every table under test needs rows"
        before_ct = {(ct.app_label, ct.model): ct.pk for ct in ContentType.objects.filter(app_label__in=OLD_APPS)}
        assert len(before_ct) == len(MOVED)
        before_perms = {p.pk: (p.codename, p.content_type_id)
                        for p in Permission.objects.filter(content_type__app_label__in=OLD_APPS)}
        defaults = ("add_", "change_", "delete_", "view_")
        extra = sorted(c for c, _ in before_perms.values()
                       if not c.startswith(defaults) or c in ("change_command_service", "add_global_alertchannel"))
        assert len(before_perms) - len(extra) == 4 * len(MOVED), extra
        # Beyond the defaults: the old apps' scale_service and drain_service, and the global
        # alert-channel permission (its migration runs before the split in the graph).
        assert {"scale_service", "drain_service"} <= set(extra), extra
        before_uop = list(apps.get_model("guardian", "UserObjectPermission").objects.values_list(
            "user_id", "permission_id", "content_type_id", "object_pk"))
        before_gop = list(apps.get_model("guardian", "GroupObjectPermission").objects.values_list(
            "group_id", "permission_id", "content_type_id", "object_pk"))
        before_entries = list(AuditEntry.objects.order_by("seq").values("id", "seq", "hash", "target_type"))
        assert all(e["seq"] is not None for e in before_entries)
        before_verify = verify_database()
        assert before_verify.ok, before_verify.summary()
        assert before_verify.checked == len(before_entries) >= len(SERVICE_AUDIT_ACTIONS) + 2

        # A web process of the new code started before `migrate` leaves an empty content type under
        # the new label; the move must not stop on it.
        twin_id = apps.get_model("contenttypes", "ContentType").objects.create(app_label="fleet", model="instance").pk

        # --- forward, as `manage.py migrate` on the upgraded code would --------------------------
        executor.migrate(executor.loader.graph.leaf_nodes())
        executor.loader.build_graph()
        assert not executor.migration_plan(executor.loader.graph.leaf_nodes())
    finally:
        final = MigrationExecutor(connection)
        if final.migration_plan(final.loader.graph.leaf_nodes()):
            final.migrate(final.loader.graph.leaf_nodes())

    from django.apps import apps as current_apps
    from django.contrib.auth.models import Group, Permission, User
    from django.contrib.contenttypes.models import ContentType
    from guardian.models import GroupObjectPermission, UserObjectPermission
    from guardian.shortcuts import get_perms

    from fleet.models import Service

    ContentType.objects.clear_cache()  # ids were cached under the labels the test started with
    assert not ContentType.objects.filter(pk=twin_id).exists()  # the empty twin is gone, the old row moved

    # Tables: new names only, every row with its ids and values.
    tables = table_names()
    assert not {t for t in tables if t.startswith(("services_", "hmsmgmt_"))}
    for old, new, name in MOVED:
        model = current_apps.get_model(new, name)
        assert model._meta.db_table == f"{new}_{name.lower()}" and model._meta.db_table in tables
        now_rows = rows(model)
        kept = {f.attname for f in model._meta.concrete_fields}  # Service's settings moved on (below)
        expected = [{k: v for k, v in row.items() if k in kept} for row in before_rows[(old, name)]]
        if name == "ProbeRollup":
            # The roll-up tiers (health 0004): minute rows keep their values under `start`, and an
            # hour and a day row are built from them.
            expected = [{**{k: v for k, v in row.items() if k != "minute"}, "start": row["minute"], "span": 60}
                        for row in before_rows[(old, name)]]
            built = [r for r in now_rows if r["span"] != 60]
            assert [(r["span"], r["total"], r["down"], r["hist"][:4]) for r in built] == [
                (3600, 3, 1, [0, 2, 0, 1]), (86400, 3, 1, [0, 2, 0, 1])]
            now_rows = [r for r in now_rows if r["span"] == 60]
        # Fields added to a model since the split hold their defaults in the migrated rows; the
        # rows are compared on the fields the old database had.
        old_keys = set(before_rows[(old, name)][0]) if before_rows[(old, name)] else set()
        added = {k for k in kept if k not in old_keys} - {"start", "span"}
        now_rows = [{k: v for k, v in r.items() if k not in added} for r in now_rows]
        assert now_rows == expected, f"{new}.{name} rows differ from {old}.{name}"
        assert count_rows(model._meta.db_table) == len(before_rows[(old, name)]) + (2 if name == "ProbeRollup" else 0)
    for app, name in UNMOVED:
        assert rows(current_apps.get_model(app, name)) == before_rows[(app, name)], f"{app}.{name} rows differ"
    for short, old_idx, new_idx in RENAMED_INDEXES:
        names = index_names(NEW_TABLE[short])
        assert new_idx in names and old_idx not in names, (NEW_TABLE[short], sorted(names))
    assert "unique_rollup_period" in index_names("health_proberollup")

    # The probe, SLO and autoscaler settings of each service moved to their apps with their values.
    for app, name in (("health", "ProbeSettings"), ("slo", "Objectives"), ("autoscaling", "AutoscaleSettings")):
        model = current_apps.get_model(app, name)
        # The settings the old Service row had (fields added since start at their defaults).
        fields = [f.attname for f in model._meta.concrete_fields
                  if f.attname != "service_id" and f.attname in before_rows[("services", "Service")][0]]
        got = {r["service_id"]: {k: r[k] for k in fields} for r in model.objects.values("service_id", *fields)}
        want = {r["id"]: {k: r[k] for k in fields} for r in before_rows[("services", "Service")]}
        assert got == want, f"{app}.{name} does not carry the services' settings"
    assert current_apps.get_model("autoscaling", "AutoscaleSettings").objects.get(pk=ids["api"]).max_instances == 6

    # New rows take fresh ids (sequences/identity came along with the renamed tables).
    with transaction.atomic():
        fresh = Service.objects.create(name="after-split")
    assert fresh.pk > max(r["id"] for r in before_rows[("services", "Service")])

    # Content types: same rows, new labels; permissions and grants follow them.
    after_ct = {(ct.app_label, ct.model): ct.pk for ct in ContentType.objects.filter(
        app_label__in=(*OLD_APPS, *NEW_APPS))}
    assert after_ct == {(new, name.lower()): before_ct[(old, name.lower())] for old, new, name in MOVED}
    service_ct = ContentType.objects.get_for_model(Service)
    assert (service_ct.app_label, service_ct.pk) == ("fleet", before_ct[("services", "service")])
    after_perms = {p.pk: (p.codename, p.content_type_id) for p in Permission.objects.filter(pk__in=before_perms)}
    assert after_perms == before_perms
    assert not Permission.objects.filter(content_type__app_label__in=OLD_APPS).exists()
    assert list(UserObjectPermission.objects.values_list("user_id", "permission_id", "content_type_id",
                                                         "object_pk")) == before_uop
    assert list(GroupObjectPermission.objects.values_list("group_id", "permission_id", "content_type_id",
                                                          "object_pk")) == before_gop

    api, batch = Service.objects.get(pk=ids["api"]), Service.objects.get(pk=ids["batch"])
    olga, pete = User.objects.get(pk=ids["olga"]), User.objects.get(pk=ids["pete"])
    group = Group.objects.get(pk=ids["group"])
    assert set(get_perms(olga, api)) == {"scale_service"}
    assert get_perms(olga, batch) == []
    assert olga.has_perm("fleet.scale_service", api) and not olga.has_perm("fleet.scale_service", batch)
    assert olga.has_perm("fleet.drain_service") and not olga.has_perm("fleet.scale_service")
    assert set(get_perms(group, api)) == {"view_service"}
    assert "view_service" in get_perms(pete, api)
    assert list(group.permissions.values_list("content_type__app_label", "codename")) == [("fleet", "scale_service")]
    assert pete.has_perm("fleet.scale_service") and not pete.has_perm("fleet.drain_service")
    assert olga.api_tokens.get().prefix == ids["token"]

    # Audit: the same sealed chain, still verifying, and a service's history still finds its entries.
    after_entries = list(AuditEntry.objects.order_by("seq").values("id", "seq", "hash", "target_type"))
    assert after_entries == before_entries
    after_verify = verify_database()
    assert after_verify.ok, after_verify.summary()
    assert (after_verify.checked, after_verify.last_seq, after_verify.last_hash) == (
        before_verify.checked, before_verify.last_seq, before_verify.last_hash)
    out = io.StringIO()
    call_command("audit_verify", stdout=out)
    assert "intact" in out.getvalue(), out.getvalue()
    assert check_log({"last_seq": checkpoint.last_seq, "last_hash": checkpoint.last_hash,
                      "count": checkpoint.count}) == []
    history = AuditEntry.objects.filter(target_type__in=events.target_types("fleet.service"), target_id=str(api.pk))
    assert sorted(history.values_list("action", flat=True)) == sorted(SERVICE_AUDIT_ACTIONS)
