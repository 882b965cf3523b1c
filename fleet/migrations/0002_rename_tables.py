"""Tables and indexes take the names of their new app (a rename: every row stays).""" 

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('fleet', '0001_initial'),
    ]

    operations = [
        migrations.RenameIndex(
            model_name='instance',
            new_name='fleet_insta_service_72e492_idx',
            old_name='services_in_service_5e7809_idx',
        ),
        migrations.AlterModelTable(
            name='instance',
            table=None,
        ),
        migrations.AlterModelTable(
            name='service',
            table=None,
        ),
    ]
