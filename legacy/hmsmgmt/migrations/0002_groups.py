"""The three standing groups. Model-level grants here; per-object grants are made in admin."""

from django.db import migrations

MOVED = {"services": "fleet"}

GROUPS = {
    "operators": [
        ("services", "service", "view_service"),
        ("services", "service", "scale_service"),
        ("workflows", "workflowdefinition", "view_workflowdefinition"),
        ("workflows", "workflowdefinition", "run_workflowdefinition"),
        ("workflows", "workflowrun", "view_workflowrun"),
        ("workflows", "workflowrun", "cancel_workflowrun"),
    ],
    # Analysts get run/view on analytics flows per object (granted when such a flow is saved).
    "analysts": [],
    "auditors": [("audit", "auditentry", "view_auditentry")],
}


def create_groups(apps, schema_editor):
    from django.apps import apps as global_apps
    from django.contrib.auth.management import create_permissions

    for config in global_apps.get_app_configs():
        create_permissions(config, verbosity=0)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, perms in GROUPS.items():
        group, _ = Group.objects.get_or_create(name=name)
        for app_label, model, codename in perms:
            # On a database created after the layout split (issue 11), create_permissions above
            # files Service under its new app, fleet; an older database still had it under services
            # here, and fleet's first migration moves the content type with its permissions.
            perm = Permission.objects.filter(content_type__app_label__in=(app_label, MOVED.get(app_label, app_label)),
                                             content_type__model=model, codename=codename).first()
            if perm is not None:
                group.permissions.add(perm)


class Migration(migrations.Migration):
    dependencies = [
        ("hmsmgmt", "0001_initial"),
        ("services", "0001_initial"),
        ("workflows", "0001_initial"),
        ("audit", "0002_append_only_triggers"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [migrations.RunPython(create_groups, migrations.RunPython.noop)]
