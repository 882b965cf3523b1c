"""Objectives: the slo settings of each service, moved out of fleet's Service table with their
values (fleet 0003 then drops the columns)."""

import django.core.validators
import django.db.models.deletion
from django.db import migrations, models

from core.migration_ops import copy_to_child


class Migration(migrations.Migration):

    dependencies = [
        ('fleet', '0002_rename_tables'),
        ('slo', '0002_rename_tables'),
    ]

    operations = [
        migrations.CreateModel(
            name='Objectives',
            fields=[
                ('service', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='objectives', serialize=False, to='fleet.service')),
                ('uptime_objective', models.FloatField(default=99.9, validators=[django.core.validators.MinValueValidator(50), django.core.validators.MaxValueValidator(99.999)])),
                ('latency_objective_ms', models.PositiveIntegerField(default=300, validators=[django.core.validators.MinValueValidator(1)])),
            ],
            options={
                'verbose_name_plural': 'objectives',
            },
        ),
        copy_to_child(("fleet", "Service"), ("slo", "Objectives"), ['uptime_objective', 'latency_objective_ms']),
    ]
