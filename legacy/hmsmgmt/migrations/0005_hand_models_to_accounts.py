"""The `hmsmgmt` app's models now belong to accounts: removed from this app's state only
(their tables live on, see those apps' 0001)."""


from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0001_initial'),
        ('hmsmgmt', '0004_operator_run_permissions'),
    ]

    state_operations = [
        migrations.RemoveField(
            model_name='apitoken',
            name='user',
        ),
        migrations.DeleteModel(
            name='LoginFailure',
        ),
        migrations.DeleteModel(
            name='ApiToken',
        ),
    ]

    operations = [migrations.SeparateDatabaseAndState(state_operations=state_operations, database_operations=[])]
