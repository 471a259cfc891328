"""Scoped access in a real browser (chromium through Playwright, against a real daphne on the test database): an
engineer picks collections listed from the in-repo wire server and a level, an approver narrows the request on its
page, and the engineer's credentials (shown once) read exactly what was granted on the server."""

from __future__ import annotations

import re
from datetime import timedelta

import pymongo
import pytest
from pymongo.errors import OperationFailure

from tests.helpers import totp_code
from tests.helpers import unique_name as _name
from tests.secret_scan import remember
from tests.test_portal_browser import browser, chromium_path, enter_code, portal_server, sign_in, steps  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_pick_collections_and_a_level_narrowed_by_the_approver_and_read_what_was_granted(
    browser,  # noqa: F811
    portal_server,  # noqa: F811
    steps,  # noqa: F811
    wire_server,
):
    from django.core.cache import cache
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from access.models import AccessRequest
    from access.services.policies import access_policy_create
    from access.services.scoped import scoped_lease_of
    from tests.factories import UserFactory, resource_on
    from tests.helpers import make_approver

    cache.clear()
    shop = _name("shop")
    with pymongo.MongoClient(wire_server.uri, serverSelectionTimeoutMS=5000) as admin:
        admin[shop].orders.insert_many([{"_id": 1, "item": "book"}, {"_id": 2, "item": "pen"}])
        admin[shop].customers.insert_one({"_id": 1, "name": "Ada"})
    resource = resource_on(wire_server, name="shop-scoped")
    engineer = UserFactory(username="sam")
    engineer_device = TOTPDevice.objects.create(user=engineer, name="app", confirmed=True)
    approver = make_approver(UserFactory(username="ann"))
    approver_device = TOTPDevice.objects.create(user=approver, name="app", confirmed=True)
    policy = access_policy_create(
        actor="test",
        name="shop scoped",
        user=engineer,
        scope_resource=resource,
        scope_databases=[shop],
        scope_levels=["read", "readWrite"],
        max_duration=timedelta(hours=2),
        approval_required=True,
    )

    sam_context = browser.new_context()
    sam = steps.watch(sam_context.new_page())
    sign_in(sam, portal_server.url, "sam")
    sam.wait_for_url(re.compile(r"/mfa/"))
    enter_code(sam, totp_code(engineer_device))
    sam.wait_for_selector("h1:has-text('Hello')")
    sam.click("nav >> text=Catalogue")
    sam.click(f"[data-scoped='{policy.pk}']")
    sam.wait_for_selector("#scoped-request-form")
    assert sam.is_visible(f"input[name=resources][value='{shop}.customers']")  # listed from the server
    sam.check(f"input[name=resources][value='{shop}.orders']")
    sam.check(f"input[name=resources][value='{shop}.customers']")
    sam.check("input[name=level][value=readWrite]")
    sam.fill("#id_duration", "1h")
    sam.fill("#id_reason", "fix order 2")
    steps.shot(sam, "scoped-request-form")
    sam.click("#send-scoped")
    sam.wait_for_selector("#scope-asked")
    steps.shot(sam, "scoped-request-sent")
    request = AccessRequest.objects.get(requester=engineer)

    ann_context = browser.new_context()
    ann = steps.watch(ann_context.new_page())
    sign_in(ann, portal_server.url, "ann")
    ann.wait_for_url(re.compile(r"/mfa/"))
    enter_code(ann, totp_code(approver_device))
    ann.wait_for_selector("h1:has-text('Hello')")
    ann.goto(f"{portal_server.url}/requests/{request.pk}/")
    ann.wait_for_selector("#scoped-decision")
    ann.uncheck(f"input[name=resources][value='{shop}.customers']")
    ann.select_option("#id_level", "read")
    steps.shot(ann, "approver-narrows")
    ann.click("#scoped-approve")
    ann.wait_for_selector("text=is approved")
    steps.shot(ann, "approved")
    ann_context.close()

    sam.goto(f"{portal_server.url}/requests/{request.pk}/")
    sam.wait_for_selector("#scope-granted")
    assert "narrowed by the approver" in sam.inner_text("#scope-granted")
    steps.shot(sam, "granted-narrowed")
    sam.click("#scoped-credentials")
    sam.wait_for_selector("#lease-password")
    password = sam.inner_text("#lease-password")
    username = sam.inner_text("#lease-username")
    steps.shot(sam, "credentials-once")
    remember(password)  # the reveal page is behind us: every later page and log is searched for it
    lease = scoped_lease_of(request)
    assert lease.username == username

    with pymongo.MongoClient(wire_server.uri_for(username, password, "admin"), serverSelectionTimeoutMS=3000) as c:
        assert c[shop].orders.count_documents({}) == 2
        with pytest.raises(OperationFailure):
            c[shop].customers.find_one()
        with pytest.raises(OperationFailure):
            c[shop].orders.insert_one({"_id": 3})
    sam.reload()
    assert not sam.is_visible("#lease-password")
    sam.click("#revoke")
    sam.wait_for_selector("text=is gone")
    steps.shot(sam, "revoked")
    sam_context.close()
    with pymongo.MongoClient(wire_server.uri, serverSelectionTimeoutMS=5000) as admin:
        assert admin.admin.command("rolesInfo", {"role": lease.server_role, "db": "admin"})["roles"] == []
        admin.drop_database(shop)
