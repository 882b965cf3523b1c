"""The `services` app's models now belong to fleet, health, slo, autoscaling: removed from this app's state only
(their tables live on, see those apps' 0001)."""


from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('fleet', '0001_initial'),
        ('health', '0001_initial'),
        ('slo', '0001_initial'),
        ('autoscaling', '0001_initial'),
        ('services', '0002_sla_probes_incidents_autoscale'),
    ]

    state_operations = [
        migrations.RemoveField(
            model_name='alertdelivery',
            name='channel',
        ),
        migrations.RemoveField(
            model_name='alertdelivery',
            name='incident',
        ),
        migrations.RemoveField(
            model_name='autoscaledecision',
            name='service',
        ),
        migrations.RemoveField(
            model_name='incident',
            name='service',
        ),
        migrations.RemoveField(
            model_name='instance',
            name='service',
        ),
        migrations.RemoveField(
            model_name='proberesult',
            name='instance',
        ),
        migrations.RemoveField(
            model_name='maintenancewindow',
            name='service',
        ),
        migrations.RemoveField(
            model_name='proberesult',
            name='service',
        ),
        migrations.RemoveField(
            model_name='proberollup',
            name='service',
        ),
        migrations.RemoveField(
            model_name='scaleoverride',
            name='service',
        ),
        migrations.DeleteModel(
            name='AlertChannel',
        ),
        migrations.DeleteModel(
            name='AlertDelivery',
        ),
        migrations.DeleteModel(
            name='AutoscaleDecision',
        ),
        migrations.DeleteModel(
            name='Incident',
        ),
        migrations.DeleteModel(
            name='Instance',
        ),
        migrations.DeleteModel(
            name='MaintenanceWindow',
        ),
        migrations.DeleteModel(
            name='ProbeResult',
        ),
        migrations.DeleteModel(
            name='ProbeRollup',
        ),
        migrations.DeleteModel(
            name='ScaleOverride',
        ),
        migrations.DeleteModel(
            name='Service',
        ),
    ]

    operations = [migrations.SeparateDatabaseAndState(state_operations=state_operations, database_operations=[])]
