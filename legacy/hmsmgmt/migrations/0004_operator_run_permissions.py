"""Operators may also retry and approve runs (permissions added by the workflow engine)."""

from django.db import migrations

PERMS = [("workflows", "workflowrun", "retry_workflowrun"), ("workflows", "workflowrun", "approve_workflowrun")]


def grant(apps, schema_editor):
    from django.apps import apps as global_apps
    from django.contrib.auth.management import create_permissions

    create_permissions(global_apps.get_app_config("workflows"), verbosity=0)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name="operators")
    for app_label, model, codename in PERMS:
        perm = Permission.objects.filter(content_type__app_label=app_label, content_type__model=model,
                                         codename=codename).first()
        if perm:
            group.permissions.add(perm)


class Migration(migrations.Migration):
    dependencies = [("hmsmgmt", "0003_login_failures"), ("workflows", "0002_step_retries_timeouts_approvals")]
    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
