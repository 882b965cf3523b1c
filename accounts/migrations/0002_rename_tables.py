"""Tables and indexes take the names of their new app (a rename: every row stays).""" 

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0001_initial'),
    ]

    operations = [
        migrations.AlterModelTable(
            name='apitoken',
            table=None,
        ),
        migrations.AlterModelTable(
            name='loginfailure',
            table=None,
        ),
    ]
