"""The models of slo take over their tables from the `services` app (layout split, issue 11):
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
            name='AlertChannel',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=100, unique=True)),
                ('kind', models.CharField(choices=[('webhook', 'Webhook (JSON POST)'), ('email', 'Email')], max_length=16)),
                ('target', models.CharField(help_text='webhook URL or email address', max_length=500)),
                ('enabled', models.BooleanField(default=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('service', models.ForeignKey(blank=True, help_text='empty = every service', null=True, on_delete=django.db.models.deletion.CASCADE, related_name='alert_channels', to='fleet.service')),
            ],
            options={
                'db_table': 'services_alertchannel',
                'ordering': ['name'],
            },
        ),
        migrations.CreateModel(
            name='Incident',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=[('availability', 'Availability'), ('latency', 'Latency')], max_length=16)),
                ('severity', models.CharField(choices=[('page', 'Page'), ('ticket', 'Ticket')], max_length=16)),
                ('status', models.CharField(choices=[('open', 'Open'), ('acknowledged', 'Acknowledged'), ('resolved', 'Resolved')], default='open', max_length=16)),
                ('title', models.CharField(max_length=200)),
                ('evidence', models.JSONField(blank=True, default=dict)),
                ('opened_at', models.DateTimeField()),
                ('acknowledged_at', models.DateTimeField(blank=True, null=True)),
                ('acknowledged_by', models.CharField(blank=True, max_length=150)),
                ('resolved_at', models.DateTimeField(blank=True, null=True)),
                ('service', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='incidents', to='fleet.service')),
            ],
            options={
                'db_table': 'services_incident',
                'ordering': ['-opened_at'],
            },
        ),
        migrations.CreateModel(
            name='AlertDelivery',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('event', models.CharField(max_length=16)),
                ('status', models.CharField(choices=[('pending', 'Pending'), ('sent', 'Sent'), ('failed', 'Failed')], default='pending', max_length=16)),
                ('attempts', models.PositiveIntegerField(default=0)),
                ('response_status', models.PositiveSmallIntegerField(blank=True, null=True)),
                ('last_error', models.CharField(blank=True, max_length=300)),
                ('payload', models.JSONField(default=dict)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('sent_at', models.DateTimeField(blank=True, null=True)),
                ('channel', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='deliveries', to='slo.alertchannel')),
                ('incident', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='deliveries', to='slo.incident')),
            ],
            options={
                'db_table': 'services_alertdelivery',
                'ordering': ['-created_at'],
            },
        ),
        migrations.AddIndex(
            model_name='incident',
            index=models.Index(fields=['service', 'status'], name='services_in_service_b70949_idx'),
        ),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=state_operations, database_operations=[]),
        move_content_types("services", "slo", ['incident', 'alertchannel', 'alertdelivery']),
    ]
