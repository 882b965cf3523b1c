"""AutoscaleSettings: the autoscaling settings of each service, moved out of fleet's Service table with their
values (fleet 0003 then drops the columns)."""

import django.core.validators
import django.db.models.deletion
from django.db import migrations, models

from core.migration_ops import copy_to_child


class Migration(migrations.Migration):

    dependencies = [
        ('autoscaling', '0002_rename_tables'),
        ('fleet', '0002_rename_tables'),
    ]

    operations = [
        migrations.CreateModel(
            name='AutoscaleSettings',
            fields=[
                ('service', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='autoscale_settings', serialize=False, to='fleet.service')),
                ('autoscale_enabled', models.BooleanField(default=False)),
                ('min_instances', models.PositiveIntegerField(default=1)),
                ('max_instances', models.PositiveIntegerField(default=10)),
                ('target_cpu_percent', models.PositiveIntegerField(blank=True, default=70, null=True)),
                ('target_latency_ms', models.PositiveIntegerField(blank=True, help_text='p95; empty = the objective', null=True)),
                ('target_demand_per_instance', models.PositiveIntegerField(blank=True, default=4, help_text='workflow steps queued or running per instance', null=True)),
                ('scale_up_max_step', models.PositiveIntegerField(default=4, validators=[django.core.validators.MinValueValidator(1)])),
                ('scale_down_max_step', models.PositiveIntegerField(default=1, validators=[django.core.validators.MinValueValidator(1)])),
                ('scale_up_stabilization_seconds', models.PositiveIntegerField(default=0)),
                ('scale_down_stabilization_seconds', models.PositiveIntegerField(default=300)),
            ],
            options={
                'verbose_name_plural': 'autoscale settings',
            },
        ),
        copy_to_child(("fleet", "Service"), ("autoscaling", "AutoscaleSettings"), ['autoscale_enabled', 'min_instances', 'max_instances', 'target_cpu_percent', 'target_latency_ms', 'target_demand_per_instance', 'scale_up_max_step', 'scale_down_max_step', 'scale_up_stabilization_seconds', 'scale_down_stabilization_seconds']),
    ]
