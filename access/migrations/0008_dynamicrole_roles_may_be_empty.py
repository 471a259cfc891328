# A dynamic role may have no MongoDB roles: servers without authorization (FerretDB, the demo's) refuse any.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('access', '0007_security_offboarding_and_verified_settings'),
    ]

    operations = [
        migrations.AlterField(
            model_name='dynamicrole',
            name='roles',
            field=models.JSONField(blank=True, default=list, help_text='e.g. ["readWrite", {"role": "read", "db": "reports"}]; empty on servers without authorization.'),
        ),
    ]
