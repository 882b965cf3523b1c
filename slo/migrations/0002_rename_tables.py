"""Tables and indexes take the names of their new app (a rename: every row stays).""" 

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('slo', '0001_initial'),
    ]

    operations = [
        migrations.RenameIndex(
            model_name='incident',
            new_name='slo_inciden_service_55cdea_idx',
            old_name='services_in_service_b70949_idx',
        ),
        migrations.AlterModelTable(
            name='alertchannel',
            table=None,
        ),
        migrations.AlterModelTable(
            name='alertdelivery',
            table=None,
        ),
        migrations.AlterModelTable(
            name='incident',
            table=None,
        ),
    ]
