"""The models of fleet take over their tables from the `services` app (layout split, issue 11):
state only, no table is touched; their content types move too, so permissions, group grants
and django-guardian object grants keep pointing at them. The tables are renamed in 0002."""


import django.core.validators
import django.db.models.deletion
from django.db import migrations, models

from core.migration_ops import move_content_types


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('contenttypes', '0002_remove_content_type_name'),
        ('services', '0002_sla_probes_incidents_autoscale'),
    ]

    state_operations = [
        migrations.CreateModel(
            name='Service',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=63, unique=True, validators=[django.core.validators.RegexValidator('^[A-Za-z][A-Za-z0-9_.-]{0,62}$', "Letters, digits, '-', '_' and '.' only.")])),
                ('description', models.CharField(blank=True, max_length=200)),
                ('driver', models.CharField(choices=[('process', 'Local processes'), ('docker', 'Docker engine'), ('swarm', 'Docker Swarm')], default='process', max_length=16)),
                ('command', models.CharField(blank=True, help_text='process driver: command line; {python} and {port} are filled in', max_length=500)),
                ('image', models.CharField(blank=True, help_text='docker/swarm: image reference', max_length=200)),
                ('port', models.PositiveIntegerField(default=8080, help_text='port the instance listens on (in the container)')),
                ('health_path', models.CharField(default='/health', max_length=200)),
                ('desired_instances', models.PositiveIntegerField(default=0)),
                ('spec_version', models.PositiveIntegerField(default=1)),
                ('last_scaled_at', models.DateTimeField(blank=True, null=True)),
                ('failure_streak', models.PositiveIntegerField(default=0)),
                ('backoff_until', models.DateTimeField(blank=True, null=True)),
                ('probe_interval_seconds', models.FloatField(default=5.0, validators=[django.core.validators.MinValueValidator(1.0)])),
                ('probe_timeout_seconds', models.FloatField(default=1.0, validators=[django.core.validators.MinValueValidator(0.1)])),
                ('failure_threshold', models.PositiveIntegerField(default=2, validators=[django.core.validators.MinValueValidator(1)])),
                ('success_threshold', models.PositiveIntegerField(default=1, validators=[django.core.validators.MinValueValidator(1)])),
                ('uptime_objective', models.FloatField(default=99.9, validators=[django.core.validators.MinValueValidator(50), django.core.validators.MaxValueValidator(99.999)])),
                ('latency_objective_ms', models.PositiveIntegerField(default=300, validators=[django.core.validators.MinValueValidator(1)])),
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
                ('created_at', models.DateTimeField(auto_now_add=True)),
            ],
            options={
                'db_table': 'services_service',
                'ordering': ['name'],
                'permissions': [('scale_service', 'Can scale service')],
            },
        ),
        migrations.CreateModel(
            name='Instance',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('driver', models.CharField(max_length=16)),
                ('ref', models.CharField(blank=True, help_text='pid, container id or task id', max_length=100)),
                ('node', models.CharField(blank=True, max_length=100)),
                ('host', models.CharField(blank=True, max_length=100)),
                ('port', models.PositiveIntegerField(blank=True, null=True)),
                ('state', models.CharField(choices=[('starting', 'Starting'), ('running', 'Running'), ('stopping', 'Stopping'), ('stopped', 'Stopped'), ('exited', 'Exited')], default='starting', max_length=16)),
                ('health', models.CharField(choices=[('unknown', 'Unknown'), ('up', 'Up'), ('down', 'Down')], default='unknown', max_length=16)),
                ('spec_version', models.PositiveIntegerField(default=1)),
                ('restarts', models.PositiveIntegerField(default=0, help_text="replacements in this slot's lineage")),
                ('exit_reason', models.CharField(blank=True, max_length=300)),
                ('cpu_percent', models.FloatField(blank=True, null=True)),
                ('memory_bytes', models.BigIntegerField(blank=True, null=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('started_at', models.DateTimeField(blank=True, null=True)),
                ('healthy_at', models.DateTimeField(blank=True, null=True)),
                ('stopped_at', models.DateTimeField(blank=True, null=True)),
                ('probe_failures', models.PositiveIntegerField(default=0)),
                ('probe_successes', models.PositiveIntegerField(default=0)),
                ('last_probe_at', models.DateTimeField(blank=True, null=True)),
                ('last_probe_ms', models.FloatField(blank=True, null=True)),
                ('service', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='instances', to='fleet.service')),
            ],
            options={
                'db_table': 'services_instance',
                'ordering': ['service', 'id'],
                'indexes': [models.Index(fields=['service', 'state'], name='services_in_service_5e7809_idx')],
            },
        ),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=state_operations, database_operations=[]),
        move_content_types("services", "fleet", ['service', 'instance']),
    ]
