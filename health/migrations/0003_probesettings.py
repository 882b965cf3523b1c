"""ProbeSettings: the health settings of each service, moved out of fleet's Service table with their
values (fleet 0003 then drops the columns)."""

import django.core.validators
import django.db.models.deletion
from django.db import migrations, models

from core.migration_ops import copy_to_child


class Migration(migrations.Migration):

    dependencies = [
        ('fleet', '0002_rename_tables'),
        ('health', '0002_rename_tables'),
    ]

    operations = [
        migrations.CreateModel(
            name='ProbeSettings',
            fields=[
                ('service', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='probe_settings', serialize=False, to='fleet.service')),
                ('probe_interval_seconds', models.FloatField(default=5.0, validators=[django.core.validators.MinValueValidator(1.0)])),
                ('probe_timeout_seconds', models.FloatField(default=1.0, validators=[django.core.validators.MinValueValidator(0.1)])),
                ('failure_threshold', models.PositiveIntegerField(default=2, validators=[django.core.validators.MinValueValidator(1)])),
                ('success_threshold', models.PositiveIntegerField(default=1, validators=[django.core.validators.MinValueValidator(1)])),
            ],
            options={
                'verbose_name_plural': 'probe settings',
            },
        ),
        copy_to_child(("fleet", "Service"), ("health", "ProbeSettings"), ['probe_interval_seconds', 'probe_timeout_seconds', 'failure_threshold', 'success_threshold']),
    ]
