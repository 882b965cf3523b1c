"""Bounds and rate policies refer to the service itself (a foreign key), not its name text.

Existing rows: service_name is looked up among the services; a name that matches none (the service
was deleted or renamed since) cannot be resolved, and left blank it would widen the policy to every
service, so such a policy is disabled, with a note in its description. The name column is dropped
by 0005 (its own transaction: PostgreSQL refuses to alter a table with pending FK trigger events)."""

import django.db.models.deletion
from django.db import migrations, models


def names_to_services(apps, schema_editor):
    Policy = apps.get_model("policies", "Policy")
    Service = apps.get_model("fleet", "Service")
    ids = dict(Service.objects.values_list("name", "id"))
    for policy in Policy.objects.exclude(service_name=""):
        if policy.service_name in ids:
            policy.service_id = ids[policy.service_name]
            policy.save(update_fields=["service"])
        else:
            note = f"[disabled by migration 0004: no service named {policy.service_name!r}]"
            policy.enabled = False
            policy.description = f"{policy.description}\n{note}".strip()
            policy.save(update_fields=["enabled", "description"])


def services_to_names(apps, schema_editor):
    Policy = apps.get_model("policies", "Policy")
    for policy in Policy.objects.filter(service__isnull=False).select_related("service"):
        policy.service_name = policy.service.name
        policy.save(update_fields=["service_name"])


class Migration(migrations.Migration):

    dependencies = [
        ("fleet", "0006_service_env_command_permission"),
        ("policies", "0003_last_node_guard"),
    ]

    operations = [
        migrations.AddField(
            model_name="policy",
            name="service",
            field=models.ForeignKey(
                blank=True, help_text="Service this applies to; blank = every service.", null=True,
                on_delete=django.db.models.deletion.CASCADE, related_name="+", to="fleet.service"),
        ),
        migrations.RunPython(names_to_services, services_to_names),
    ]
