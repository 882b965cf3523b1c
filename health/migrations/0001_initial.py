"""The models of health take over their tables from the `services` app (layout split, issue 11):
state only, no table is touched; their content types move too, so permissions, group grants
and django-guardian object grants keep pointing at them. The tables are renamed in 0002."""


import django.db.models.deletion
from django.db import migrations, models

from core.migration_ops import move_content_types


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('contenttypes', '0002_remove_content_type_name'),
        ('services', '0002_sla_probes_incidents_autoscale'),
        ('fleet', '0001_initial'),
    ]

    state_operations = [
        migrations.CreateModel(
            name='MaintenanceWindow',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('starts_at', models.DateTimeField()),
                ('ends_at', models.DateTimeField()),
                ('reason', models.CharField(blank=True, max_length=200)),
                ('created_by', models.CharField(blank=True, max_length=150)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('service', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='maintenance_windows', to='fleet.service')),
            ],
            options={
                'db_table': 'services_maintenancewindow',
                'ordering': ['-starts_at'],
            },
        ),
        migrations.CreateModel(
            name='ProbeResult',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('at', models.DateTimeField()),
                ('ok', models.BooleanField()),
                ('latency_ms', models.FloatField()),
                ('status_code', models.PositiveSmallIntegerField(blank=True, null=True)),
                ('error', models.CharField(blank=True, max_length=200)),
                ('in_maintenance', models.BooleanField(default=False)),
                ('instance', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='probe_results', to='fleet.instance')),
                ('service', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='probe_results', to='fleet.service')),
            ],
            options={
                'db_table': 'services_proberesult',
                'ordering': ['-at'],
                'indexes': [models.Index(fields=['service', 'at'], name='services_pr_service_86e9c2_idx'), models.Index(fields=['at'], name='services_pr_at_8b365f_idx')],
            },
        ),
        migrations.CreateModel(
            name='ProbeRollup',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('minute', models.DateTimeField()),
                ('total', models.PositiveIntegerField(default=0)),
                ('up', models.PositiveIntegerField(default=0)),
                ('down', models.PositiveIntegerField(default=0)),
                ('slow', models.PositiveIntegerField(default=0)),
                ('excluded', models.PositiveIntegerField(default=0)),
                ('hist', models.JSONField(default=list)),
                ('p50_ms', models.FloatField(blank=True, null=True)),
                ('p95_ms', models.FloatField(blank=True, null=True)),
                ('max_ms', models.FloatField(blank=True, null=True)),
                ('service', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='rollups', to='fleet.service')),
            ],
            options={
                'db_table': 'services_proberollup',
                'ordering': ['service', 'minute'],
                'constraints': [models.UniqueConstraint(fields=('service', 'minute'), name='unique_rollup_minute')],
            },
        ),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=state_operations, database_operations=[]),
        move_content_types("services", "health", ['proberesult', 'proberollup', 'maintenancewindow']),
    ]
