from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("controller", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="loopbeat",
            name="leader",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="loopbeat",
            name="since",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
