"""The probe, SLO and autoscaler settings now live in health, slo and autoscaling (their 0003
copied the values first)."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('fleet', '0002_rename_tables'),
        ('health', '0003_probesettings'),
        ('slo', '0003_objectives'),
        ('autoscaling', '0003_autoscalesettings'),
    ]

    operations = [
        migrations.RemoveField(
            model_name='service',
            name='autoscale_enabled',
        ),
        migrations.RemoveField(
            model_name='service',
            name='failure_threshold',
        ),
        migrations.RemoveField(
            model_name='service',
            name='latency_objective_ms',
        ),
        migrations.RemoveField(
            model_name='service',
            name='max_instances',
        ),
        migrations.RemoveField(
            model_name='service',
            name='min_instances',
        ),
        migrations.RemoveField(
            model_name='service',
            name='probe_interval_seconds',
        ),
        migrations.RemoveField(
            model_name='service',
            name='probe_timeout_seconds',
        ),
        migrations.RemoveField(
            model_name='service',
            name='scale_down_max_step',
        ),
        migrations.RemoveField(
            model_name='service',
            name='scale_down_stabilization_seconds',
        ),
        migrations.RemoveField(
            model_name='service',
            name='scale_up_max_step',
        ),
        migrations.RemoveField(
            model_name='service',
            name='scale_up_stabilization_seconds',
        ),
        migrations.RemoveField(
            model_name='service',
            name='success_threshold',
        ),
        migrations.RemoveField(
            model_name='service',
            name='target_cpu_percent',
        ),
        migrations.RemoveField(
            model_name='service',
            name='target_demand_per_instance',
        ),
        migrations.RemoveField(
            model_name='service',
            name='target_latency_ms',
        ),
        migrations.RemoveField(
            model_name='service',
            name='uptime_objective',
        ),
    ]
