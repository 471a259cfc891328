# A lease whose issue failed is a failed attempt (state "failed"), not a revoked lease; "API token" reads as such.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('access', '0005_auditevent_action_api_token_revoke'),
    ]

    operations = [
        migrations.AlterModelOptions(
            name='apitoken',
            options={'ordering': ['-created_at'], 'verbose_name': 'API token'},
        ),
        migrations.AlterField(
            model_name='lease',
            name='state',
            field=models.CharField(choices=[('active', 'Active'), ('revoking', 'Revoking'), ('revoked', 'Revoked'), ('expired', 'Expired'), ('revoke_failed', 'Revoke failed (retrying)'), ('failed', 'Issue failed')], db_index=True, default='active', max_length=16),
        ),
    ]
