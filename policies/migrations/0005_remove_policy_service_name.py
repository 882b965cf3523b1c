from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("policies", "0004_policy_service"),
    ]

    operations = [
        migrations.RemoveField(model_name="policy", name="service_name"),
    ]
