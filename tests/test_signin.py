"""Sign-in cannot be guessed: failures are throttled per account and per client address, on /login/
and /admin/login/, with a message that says until when; an administrator can unlock early."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
import time_machine
from axes.models import AccessAttempt
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from playwright.sync_api import Page, expect

from tests import factories

# 06:59:30 UTC: five failures now pause sign-in until 07:14:30, which the page rounds up to 07:15.
T0 = datetime(2026, 3, 2, 6, 59, 30, tzinfo=UTC)
UNLOCKED = T0 + timedelta(minutes=15, seconds=1)
WRONG = "not-the-password"
PAUSED = "Sign-in is paused: 5 failed attempts for this account or from your address."


def text(response: Any) -> str:
    return str(response.content.decode())


def sign_in(client: Client, username: str, password: str, path: str = "/login/") -> Any:
    return client.post(path, {"username": username, "password": password, "next": "/manage/"})


def fail(client: Client, username: str, times: int, path: str = "/login/") -> Any:
    response = None
    for _ in range(times):
        response = sign_in(client, username, WRONG, path)
    return response


@pytest.fixture
def clock(db: None) -> Iterator[Any]:
    """Time fixed at T0 before anything is created (the personas below depend on it)."""
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


@pytest.fixture
def alice(clock: Any) -> User:
    return factories.make_user(username="alice", is_staff=True)


@pytest.fixture
def bob(clock: Any) -> User:
    return factories.make_user(username="bob", is_staff=True)


@pytest.fixture
def superuser(clock: Any) -> User:
    return User.objects.create_superuser("root-admin", "root@example.com", factories.PASSWORD)


def test_it_pauses_an_account_after_five_failures_and_says_until_when(alice: User, clock: Any) -> None:
    client = Client(REMOTE_ADDR="192.0.2.10")
    fourth = fail(client, "alice", 4)
    assert fourth.status_code == 200
    assert "Please enter a correct username and password" in text(fourth)

    fifth = fail(client, "alice", 1)
    assert fifth.status_code == 429
    assert PAUSED in text(fifth)
    assert "Try again at 07:15 UTC (in 15 min 30 s), or ask an administrator to unlock it." in text(fifth)
    assert fifth["Retry-After"] == "901"
    assert 'role="alert"' in text(fifth) and 'name="username"' in text(fifth)  # the page, with its form

    clock.shift(timedelta(minutes=10))  # the right password, and more wrong ones, while paused
    right = sign_in(client, "alice", factories.PASSWORD)
    assert right.status_code == 429 and "_auth_user_id" not in client.session
    assert "Try again at 07:15 UTC (in 5 min 30 s)" in text(right)
    assert "Try again at 07:15 UTC" in text(fail(client, "alice", 3))  # refusals do not extend it

    clock.move_to(UNLOCKED)
    response = sign_in(client, "alice", factories.PASSWORD)
    assert (response.status_code, response["Location"]) == (302, "/manage/")
    assert client.session["_auth_user_id"] == str(User.objects.get(username="alice").pk)


def test_it_counts_an_accounts_failures_from_every_address(alice: User) -> None:
    for n in range(5):
        fail(Client(REMOTE_ADDR=f"198.51.100.{n}"), "alice", 1)

    response = sign_in(Client(REMOTE_ADDR="203.0.113.77"), "alice", factories.PASSWORD)
    other = sign_in(Client(REMOTE_ADDR="203.0.113.77"), "bob", WRONG)

    assert response.status_code == 429 and PAUSED in text(response)
    assert other.status_code == 200  # the address is not paused, only the account


def test_it_counts_an_addresss_failures_across_accounts(alice: User, bob: User) -> None:
    guesser = Client(REMOTE_ADDR="192.0.2.66")
    for name in ("root", "admin", "oncall", "ops", "alice"):
        fail(guesser, name, 1)

    from_guesser = sign_in(guesser, "bob", factories.PASSWORD)
    from_elsewhere = sign_in(Client(REMOTE_ADDR="192.0.2.67"), "bob", factories.PASSWORD)

    assert from_guesser.status_code == 429 and "Try again at 07:15 UTC" in text(from_guesser)
    assert from_elsewhere.status_code == 302


def test_the_admin_sign_in_is_paused_too_and_shares_the_count(alice: User) -> None:
    client = Client(REMOTE_ADDR="192.0.2.20")
    fail(client, "alice", 3)  # on /login/
    response = fail(client, "alice", 2, "/admin/login/?next=/admin/")
    right = sign_in(client, "alice", factories.PASSWORD, "/admin/login/?next=/admin/")

    assert response.status_code == 429
    assert PAUSED in text(response) and "Try again at 07:15 UTC" in text(response)
    assert 'class="errornote"' in text(response)  # the admin's own page, with its form
    assert right.status_code == 429 and "_auth_user_id" not in client.session


def test_it_names_the_display_zone_in_the_unlock_time(alice: User, settings: Any) -> None:
    settings.DISPLAY_TIME_ZONE = "Europe/Berlin"
    response = fail(Client(REMOTE_ADDR="192.0.2.30"), "alice", 5)

    assert "Try again at 08:15 CET (in 15 min 30 s)" in text(response)


def test_it_counts_the_visitor_behind_a_trusted_proxy(alice: User, bob: User, settings: Any) -> None:
    settings.TRUST_X_FORWARDED_FOR = True  # every request comes from nginx on 127.0.0.1

    def via_proxy(visitor: str) -> Client:
        return Client(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=f"10.9.9.9, {visitor}")

    for name in ("root", "admin", "oncall", "ops", "deploy"):
        fail(via_proxy("198.51.100.5"), name, 1)

    guesser = sign_in(via_proxy("198.51.100.5"), "bob", factories.PASSWORD)
    colleague = sign_in(via_proxy("203.0.113.8"), "bob", factories.PASSWORD)

    assert guesser.status_code == 429
    assert colleague.status_code == 302  # the proxy's own address is not what gets paused
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"198.51.100.5"}


def test_a_forwarded_for_that_is_not_an_address_counts_the_connection(alice: User, settings: Any) -> None:
    settings.TRUST_X_FORWARDED_FOR = True
    client = Client(REMOTE_ADDR="192.0.2.40", HTTP_X_FORWARDED_FOR="<script>, not-an-ip")
    responses = [sign_in(client, f"user{n}", WRONG) for n in range(5)]

    assert [r.status_code for r in responses] == [200, 200, 200, 200, 429]
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"192.0.2.40"}


def test_an_administrator_unlocks_an_account_with_a_command(alice: User) -> None:
    client = Client(REMOTE_ADDR="192.0.2.50")
    fail(client, "alice", 5)
    locked = sign_in(client, "alice", factories.PASSWORD)
    out = StringIO()
    call_command("axes_reset_username", "alice", stdout=out)
    response = sign_in(client, "alice", factories.PASSWORD)

    assert locked.status_code == 429
    assert "1 attempts removed." in out.getvalue()
    assert response.status_code == 302


def test_an_administrator_unlocks_an_address_with_a_command(alice: User) -> None:
    client = Client(REMOTE_ADDR="192.0.2.51")
    for name in ("a", "b", "c", "d", "e"):
        fail(client, name, 1)
    locked = sign_in(client, "alice", factories.PASSWORD)
    call_command("axes_reset_ip", "192.0.2.51", stdout=StringIO())
    response = sign_in(client, "alice", factories.PASSWORD)

    assert locked.status_code == 429
    assert response.status_code == 302


def test_an_administrator_unlocks_in_the_admin(alice: User, superuser: User) -> None:
    client = Client(REMOTE_ADDR="192.0.2.52")
    admin = Client()
    admin.force_login(superuser)
    fail(client, "alice", 5)
    locked = sign_in(client, "alice", factories.PASSWORD)
    listing = admin.get("/admin/axes/accessattempt/?q=alice")
    ids = [str(pk) for pk in AccessAttempt.objects.filter(username="alice").values_list("pk", flat=True)]
    deleted = admin.post(
        "/admin/axes/accessattempt/",
        {"action": "delete_selected", "_selected_action": ids, "post": "yes"},
    )
    response = sign_in(client, "alice", factories.PASSWORD)

    assert locked.status_code == 429
    assert listing.status_code == 200 and "Locked Out" in text(listing)
    assert deleted.status_code == 302
    assert response.status_code == 302


def test_an_api_token_is_not_a_password_and_keeps_working(alice: User) -> None:
    out = StringIO()
    call_command("create_api_token", "alice", stdout=out, stderr=StringIO())
    api = Client(REMOTE_ADDR="192.0.2.60", headers={"Authorization": f"Bearer {out.getvalue().strip()}"})
    fail(Client(REMOTE_ADDR="192.0.2.60"), "alice", 5)
    response = api.get("/api/v1/incidents")

    assert response.status_code == 200


def test_signing_in_with_force_login_and_the_right_password_still_works(alice: User) -> None:
    """The test suite's own logins (force_login) and a first right password are untouched."""
    client = Client()
    client.force_login(alice)
    assert client.get("/manage/").status_code == 200

    response = sign_in(Client(REMOTE_ADDR="192.0.2.70"), "alice", factories.PASSWORD)
    assert response.status_code == 302
    assert not AccessAttempt.objects.exists()


def test_a_person_in_a_browser_is_told_until_when(
    requires_chromium: None, transactional_db: None, live_server: Any, page: Page
) -> None:
    with time_machine.travel(T0):  # ticking: the browser and the live server run in real time from T0
        factories.make_user(username="alice", is_staff=True)
        page.goto(f"{live_server.url}/login/?next=/manage/")
        for _ in range(5):
            page.get_by_label("Username").fill("alice")
            page.get_by_label("Password").fill(WRONG)
            page.get_by_role("button", name="Log in").click()

        alert = page.get_by_role("alert")
        expect(alert).to_contain_text(PAUSED)
        expect(alert).to_contain_text("Try again at 07:15 UTC")
        page.get_by_label("Password").fill(factories.PASSWORD)  # the form is still there, and still refuses
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("alert")).to_contain_text("Try again at 07:15 UTC")
        expect(page).to_have_url(re.compile(r"/login/$"))
