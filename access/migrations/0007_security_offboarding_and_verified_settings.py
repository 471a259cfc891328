# Issue 12: resources remember the connection settings their credentials may go to (existing ones keep theirs);
# sessions end for deactivated users and removed grants, and each end is a row the gateways poll; new audit actions.

import hashlib
import json

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


def _fingerprint(resource) -> str:
    # Resource.connection_fingerprint as of this migration: existing resources keep working as configured.
    if resource.kind == "atlas":
        settings = {"kind": resource.kind, "atlas_base_url": (resource.atlas_base_url or "").strip()}
    else:
        settings = {
            "kind": resource.kind,
            "uri": (resource.uri or "").strip(),
            "tls": bool(resource.tls),
            "tls_verify": bool(resource.tls_verify),
            "ca_certificate": (resource.ca_certificate or "").strip(),
        }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def trust_existing_settings(apps, schema_editor):
    Resource = apps.get_model("access", "Resource")
    for resource in Resource.objects.only("pk", "kind", "uri", "tls", "tls_verify", "ca_certificate", "atlas_base_url"):
        Resource.objects.filter(pk=resource.pk).update(verified_fingerprint=_fingerprint(resource))


class Migration(migrations.Migration):

    dependencies = [
        ('access', '0006_lease_failed_state_and_labels'),
    ]

    operations = [
        migrations.AddField(
            model_name='resource',
            name='verified_at',
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name='resource',
            name='verified_fingerprint',
            field=models.CharField(blank=True, editable=False, help_text="The connection settings (hosts, options, TLS) stored credentials may be sent to: those of the resource's creation or of its last successful verification.", max_length=64),
        ),
        migrations.RunPython(trust_existing_settings, migrations.RunPython.noop),
        migrations.AlterField(
            model_name='auditevent',
            name='action',
            field=models.CharField(choices=[('request.create', 'request created'), ('request.break_glass', 'break-glass request'), ('request.approve', 'request approved'), ('request.deny', 'request denied'), ('request.cancel', 'request cancelled'), ('request.post_review', 'break-glass reviewed'), ('accesspolicy.create', 'policy created'), ('accesspolicy.update', 'policy updated'), ('accesspolicy.delete', 'policy deleted'), ('lease.issue', 'lease issued'), ('lease.issue_failed', 'lease issue failed'), ('lease.renew', 'lease renewed'), ('lease.reveal', 'lease password revealed'), ('lease.revoke', 'lease revoked'), ('lease.revoke_failed', 'lease revoke failed'), ('lease.revoke_prefix', 'leases revoked by prefix'), ('session.open', 'session opened'), ('session.connect', 'session connected'), ('session.end', 'session ended'), ('gateway.register', 'gateway registered'), ('gateway.create', 'gateway created'), ('gateway.update', 'gateway updated'), ('gateway.delete', 'gateway deleted'), ('resource.create', 'resource created'), ('resource.update', 'resource updated'), ('resource.delete', 'resource deleted'), ('resource.verify_connection', 'connection verified'), ('resource.rotate_root_started', 'root rotation started'), ('resource.rotate_root', 'root rotated'), ('resource.rotate_root_failed', 'root rotation failed'), ('account.create', 'account created'), ('account.update', 'account updated'), ('account.delete', 'account deleted'), ('account.rotate_password', 'account password rotated'), ('dynamicrole.create', 'role created'), ('dynamicrole.update', 'role updated'), ('dynamicrole.delete', 'role deleted'), ('reconcile.drop_user', 'orphan user dropped'), ('connector_action.run', 'connector action started'), ('connector_action.succeeded', 'connector action succeeded'), ('connector_action.failed', 'connector action failed'), ('connector_action.rollback', 'connector action rollback started'), ('connector_action.rolled_back', 'connector action rolled back'), ('connector_action.rollback_failed', 'connector action rollback failed'), ('api_token.create', 'API token created'), ('api_token.first_use', 'API token first used'), ('api_token.revoke', 'API token revoked'), ('user.access_end', "user's access ended"), ('auth.login', 'password accepted'), ('auth.login_failed', 'password refused'), ('auth.logout', 'signed out'), ('auth.lockout', 'locked out'), ('auth.lockout_clear', 'lockout cleared'), ('auth.mfa_passed', 'second factor passed'), ('auth.mfa_failed', 'second factor failed'), ('auth.step_up', 'step-up passed'), ('auth.email_code_sent', 'email code sent'), ('gateway.login_failed', 'gateway login failed'), ('mfa.totp_enrol', 'authenticator enrolled'), ('mfa.backup_codes', 'backup codes made'), ('mfa.method', 'MFA method chosen'), ('otp.device.create', 'OTP device added (manage.py)'), ('demo.user.create', 'demo user created'), ('secrets.reencrypt', 'secrets re-encrypted'), ('schedules.setup', 'schedules set up')], db_index=True, max_length=64),
        ),
        migrations.AlterField(
            model_name='session',
            name='end_reason',
            field=models.CharField(blank=True, choices=[('expired', 'Expired'), ('ended_by_user', 'Ended by its user'), ('killed', 'Killed by an administrator'), ('account_revoked', 'Account or lease revoked'), ('gateway_stopped', 'Gateway stopped'), ('gateway_lost', 'Gateway lost'), ('user_deactivated', 'User deactivated'), ('user_deleted', 'User deleted'), ('grant_removed', 'Grant removed')], max_length=32),
        ),
        migrations.CreateModel(
            name='SessionRevocation',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('session_username', models.CharField(max_length=100)),
                ('gateway_id', models.BigIntegerField(blank=True, null=True)),
                ('reason', models.CharField(choices=[('expired', 'Expired'), ('ended_by_user', 'Ended by its user'), ('killed', 'Killed by an administrator'), ('account_revoked', 'Account or lease revoked'), ('gateway_stopped', 'Gateway stopped'), ('gateway_lost', 'Gateway lost'), ('user_deactivated', 'User deactivated'), ('user_deleted', 'User deleted'), ('grant_removed', 'Grant removed')], max_length=32)),
                ('description', models.CharField(max_length=255)),
                ('created_at', models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                ('session', models.ForeignKey(null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='revocations', to='access.session')),
            ],
            options={
                'ordering': ['id'],
            },
        ),
    ]
