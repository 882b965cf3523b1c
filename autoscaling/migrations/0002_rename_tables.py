"""Tables and indexes take the names of their new app (a rename: every row stays).""" 

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('autoscaling', '0001_initial'),
    ]

    operations = [
        migrations.RenameIndex(
            model_name='autoscaledecision',
            new_name='autoscaling_service_a41696_idx',
            old_name='services_au_service_3c84fe_idx',
        ),
        migrations.AlterModelTable(
            name='autoscaledecision',
            table=None,
        ),
        migrations.AlterModelTable(
            name='scaleoverride',
            table=None,
        ),
    ]
