"""The models of autoscaling take over their tables from the `services` app (layout split, issue 11):
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
            name='ScaleOverride',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('owner', models.CharField(max_length=150)),
                ('instances', models.PositiveIntegerField()),
                ('reason', models.CharField(blank=True, max_length=200)),
                ('created_at', models.DateTimeField()),
                ('expires_at', models.DateTimeField(blank=True, null=True)),
                ('cleared_at', models.DateTimeField(blank=True, null=True)),
                ('service', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='scale_overrides', to='fleet.service')),
            ],
            options={
                'db_table': 'services_scaleoverride',
                'ordering': ['-created_at'],
            },
        ),
        migrations.CreateModel(
            name='AutoscaleDecision',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('at', models.DateTimeField()),
                ('current', models.PositiveIntegerField()),
                ('raw', models.PositiveIntegerField(help_text='formula result before windows, rates and bounds')),
                ('desired', models.PositiveIntegerField()),
                ('applied', models.BooleanField(default=False)),
                ('summary', models.CharField(max_length=300)),
                ('inputs', models.JSONField(default=dict)),
                ('clipped', models.JSONField(default=list)),
                ('service', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='autoscale_decisions', to='fleet.service')),
            ],
            options={
                'db_table': 'services_autoscaledecision',
                'ordering': ['-at'],
                'indexes': [models.Index(fields=['service', 'at'], name='services_au_service_3c84fe_idx')],
            },
        ),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=state_operations, database_operations=[]),
        move_content_types("services", "autoscaling", ['autoscaledecision', 'scaleoverride']),
    ]
