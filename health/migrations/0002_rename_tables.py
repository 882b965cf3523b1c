"""Tables and indexes take the names of their new app (a rename: every row stays).""" 

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('health', '0001_initial'),
    ]

    operations = [
        migrations.RenameIndex(
            model_name='proberesult',
            new_name='health_prob_service_4ea2d8_idx',
            old_name='services_pr_service_86e9c2_idx',
        ),
        migrations.RenameIndex(
            model_name='proberesult',
            new_name='health_prob_at_075de7_idx',
            old_name='services_pr_at_8b365f_idx',
        ),
        migrations.AlterModelTable(
            name='maintenancewindow',
            table=None,
        ),
        migrations.AlterModelTable(
            name='proberesult',
            table=None,
        ),
        migrations.AlterModelTable(
            name='proberollup',
            table=None,
        ),
    ]
