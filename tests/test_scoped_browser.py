"""Scoped access in a real browser (chromium through Playwright, against a real daphne on the test database): an
engineer picks collections listed from the in-repo wire server and a level, an approver narrows the request on its
page, and the engineer's credentials (shown once) read exactly what was granted on the server."""

from __future__ import annotations

import re
from datetime import timedelta

import pymongo
import pytest
from pymongo.errors import OperationFailure

from tests.helpers import database_on, scoped_envelope, totp_code
from tests.secret_scan import remember
from tests.test_portal_browser import browser, chromium_path, enter_code, portal_server, sign_in, steps  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def shop(wire_server):
    orders = [{"_id": 1, "item": "book"}, {"_id": 2, "item": "pen"}]
    with database_on(wire_server.uri, orders=orders, customers=[{"_id": 1, "name": "Ada"}]) as name:
        yield name


def test_pick_collections_and_a_level_narrowed_by_the_approver_and_read_what_was_granted(
    browser,  # noqa: F811
    portal_server,  # noqa: F811
    steps,  # noqa: F811
    wire_server,
    shop,
):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from access.models import AccessRequest
    from access.services.scoped import scoped_lease_of

    world = scoped_envelope(
        wire_server, [shop], requester="sam", approver="ann", name="shop scoped", max_duration=timedelta(hours=2)
    )
    engineer, approver, policy = world["requester"], world["approver"], world["policy"]
    engineer_device = TOTPDevice.objects.create(user=engineer, name="app", confirmed=True)
    approver_device = TOTPDevice.objects.create(user=approver, name="app", confirmed=True)

    sam_context = browser.new_context()
    sam = steps.watch(sam_context.new_page())
    sign_in(sam, portal_server.url, engineer.username)
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
    sign_in(ann, portal_server.url, approver.username)
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
