"""Secrets are encrypted at rest, masked everywhere, and re-encrypted by key rotation."""

import logging

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection

from access.crypto import Secret
from access.models import Account, Resource
from tests.factories import AccountFactory, ResourceFactory

PASSWORD = "Acc0unt-Pa55word-Unique-7731"


def raw_column(model, pk, column):
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {model._meta.db_table} WHERE id = %s", [pk])
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_account_password_is_encrypted_at_rest_and_revealed_on_demand():
    account = AccountFactory(password=PASSWORD)
    stored = raw_column(Account, account.pk, "password")
    assert PASSWORD not in stored
    assert stored.startswith("gAAAA")  # a Fernet token
    assert Account.objects.get(pk=account.pk).password.reveal() == PASSWORD


@pytest.mark.django_db
def test_secret_never_shows_in_str_repr_or_format():
    account = AccountFactory(password=PASSWORD)
    account = Account.objects.get(pk=account.pk)
    for text in (
        str(account),
        repr(account),
        str(account.password),
        repr(account.password),
        f"{account.password}",
        repr(account.__dict__),
    ):
        assert PASSWORD not in text


def test_secret_cannot_be_pickled():
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(Secret(plain=PASSWORD))


@pytest.mark.django_db
def test_rotate_encryption_key_reencrypts_every_secret_under_the_new_key(settings, capsys):
    old_key = settings.PAM_ENCRYPTION_KEYS[0]
    account = AccountFactory(password=PASSWORD)
    resource = account.resource
    before = raw_column(Account, account.pk, "password")

    new_key = Fernet.generate_key().decode()
    settings.PAM_ENCRYPTION_KEYS = [new_key, old_key]
    call_command("rotate_encryption_key")
    out = capsys.readouterr().out
    assert "access.Account.password: 1 re-encrypted" in out
    assert "access.Resource.admin_password: 1 re-encrypted" in out

    after = raw_column(Account, account.pk, "password")
    assert after != before
    assert Fernet(new_key.encode()).decrypt(after.encode()).decode() == PASSWORD
    settings.PAM_ENCRYPTION_KEYS = [new_key]  # the old key can now be dropped
    assert Account.objects.get(pk=account.pk).password.reveal() == PASSWORD
    assert Resource.objects.get(pk=resource.pk).admin_password.reveal() == resource.admin_password.reveal()


@pytest.mark.django_db
def test_secrets_stay_out_of_logs_when_records_are_logged(caplog):
    account = AccountFactory(password=PASSWORD)
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("access.test").info("saved %s %r %s", account, account, account.password)
    assert PASSWORD not in caplog.text


@pytest.mark.django_db
def test_blank_secret_on_edit_keeps_the_stored_one():
    from access.services.resources import resource_update

    resource = ResourceFactory(admin_password="Keep-Me-Stored-1234")
    resource_update(actor=None, resource=resource, admin_password="", description="changed")
    assert Resource.objects.get(pk=resource.pk).admin_password.reveal() == "Keep-Me-Stored-1234"


@pytest.mark.django_db
def test_no_secret_reaches_any_log_line_through_the_api_and_admin(caplog, api_client, otp_admin_client, settings):
    """Every logger at DEBUG while secrets travel through the API, validation errors and the admin."""
    admin_secret, account_secret, uri_secret = "Root-Pw-Leak-Check-4471", "Acct-Pw-Leak-Check-9902", "InUri-Pw-3318"
    with caplog.at_level(logging.DEBUG):
        api_client.post(
            "/api/v1/resources",
            {
                "name": "leakcheck",
                "uri": "mongodb://db1:27017",
                "admin_username": "root",
                "admin_password": admin_secret,
            },
            format="json",
        )
        api_client.post("/api/v1/resources", {"name": "bad", "uri": f"mongodb://root:{uri_secret}@db1"}, format="json")
        api_client.post(
            "/api/v1/accounts",
            {"resource": "leakcheck", "name": "app", "username": "app", "password": account_secret},
            format="json",
        )
        account = Account.objects.get(name="app")
        otp_admin_client.get(f"/admin/access/account/{account.pk}/change/")
        otp_admin_client.get("/admin/access/auditevent/")
        api_client.get("/api/v1/accounts")
    everything = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    for secret in (admin_secret, account_secret, uri_secret):
        assert secret not in everything
