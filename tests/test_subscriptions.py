"""The public subscription pages: sign up, confirm, manage, unsubscribe (one click included).

An anonymous reader requests the literal URLs. Mail goes to Django's locmem outbox (`mailoutbox`);
the notify task runs eagerly when the on-commit callbacks run, so every request or action that
should send is wrapped in `django_capture_on_commit_callbacks(execute=True)`. Links are taken from
the emails themselves, as a subscriber would follow them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
import time_machine
from django.conf import settings
from django.contrib.auth.models import User
from django.core.mail import EmailMessage
from django.test import Client
from django.utils.html import escape

from incidents import actions, publishing
from incidents.actions import ActionRefused
from incidents.models import Component, Subscriber
from incidents.tokens import make_token
from tests import factories

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
ALL_KINDS = ["incidents", "maintenance", "postmortems"]
SENT = "a confirmation is on its way to it"
LINK = re.compile(r"https?://[^/\s]+(/subscribe/(?:confirm|manage|unsubscribe)/[^\s\"<>]+)")

Capture = Callable[..., AbstractContextManager[Any]]


@pytest.fixture(autouse=True)
def frozen() -> Iterator[time_machine.Traveller]:
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


@pytest.fixture
def components(staff: User) -> dict[str, Component]:
    query_api = factories.make_component(name="Query API", is_group=True, actor=staff)
    return {
        "group": query_api,
        "us": factories.make_component(name="US", group=query_api, actor=staff),
        "eu": factories.make_component(name="EU", group=query_api, actor=staff),
        "website": factories.make_component(name="Website", actor=staff),
    }


def form(email: str, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "email": email,
        "scope": "all",
        "kinds": ALL_KINDS,
        "minimum_impact": "none",
        "website": "",
    }
    return {**data, **overrides}


def text(response: Any) -> str:
    content: bytes = response.content
    return content.decode()


def links(message: EmailMessage) -> dict[str, str]:
    """The subscription links in an email's text, by kind: {"confirm": "/subscribe/confirm/…", …}."""
    found = {}
    for path in LINK.findall(str(message.body)):
        found[path.split("/")[2]] = path
    return found


def sign_up(client: Client, capture: Capture, email: str, **overrides: Any) -> Any:
    with capture(execute=True):
        return client.post("/subscribe", form(email, **overrides))


def subscribed(capture: Capture, email: str, *, confirm: bool = True, **choices: Any) -> Subscriber:
    """An address signed up through the action (and confirmed), as if it had used the form earlier."""
    with capture(execute=True):
        subscriber = actions.subscribe(email=email, at=T0 - timedelta(days=3), **choices)
    return actions.confirm_subscription(subscriber) if confirm else subscriber


def template_names(response: Any) -> list[str]:
    return [t.name for t in response.templates if t.name]


# --- the form -----------------------------------------------------------------------------------


def test_it_shows_the_form_with_components_under_their_groups(client: Client, components: dict[str, Component]) -> None:
    response = client.get("/subscribe")

    assert response.status_code == 200
    html = text(response)
    assert 'name="email"' in html and 'type="email"' in html
    assert "Leave this empty" in html
    trap = re.search(r"<input[^>]*name=\"website\"[^>]*>", html)
    assert trap is not None and 'tabindex="-1"' in trap.group() and 'autocomplete="off"' in trap.group()
    # Only real components are choices, under their group's name; the group itself is not one.
    values = re.findall(r'name="components" value="(\d+)"', html)
    assert sorted(values) == sorted(str(components[k].pk) for k in ("us", "eu", "website"))
    us, eu = components["us"].pk, components["eu"].pk
    assert re.search(rf'<legend>Query API</legend>.*value="{us}".*value="{eu}"', html, re.S)
    for kind in ALL_KINDS:
        assert re.search(rf'<input type="checkbox" name="kinds" value="{kind}"[^>]* checked', html), kind
    assert re.search(r'<input type="radio" name="minimum_impact" value="none"[^>]* checked', html)
    assert "Part of the service is unavailable." in html  # impact is explained in words
    assert "no-store" in response["Cache-Control"]  # it carries a CSRF token: never from a shared cache


def test_it_needs_a_csrf_token_to_sign_up() -> None:
    strict = Client(enforce_csrf_checks=True)
    response = strict.post("/subscribe", form("ada@example.com"))
    assert response.status_code == 403
    assert not Subscriber.objects.exists()


def test_it_sends_one_confirmation_with_a_confirm_link(
    client: Client,
    components: dict[str, Component],
    mailoutbox: list[EmailMessage],
    django_capture_on_commit_callbacks: Capture,
) -> None:
    response = sign_up(
        client,
        django_capture_on_commit_callbacks,
        " Ada@Example.com ",
        scope="some",
        components=[components["us"].pk],
        kinds=["incidents"],
        minimum_impact="major",
    )

    assert response.status_code == 200
    assert SENT in text(response)
    assert len(mailoutbox) == 1
    assert mailoutbox[0].to == ["Ada@Example.com"]
    assert set(links(mailoutbox[0])) >= {"confirm"}
    subscriber = Subscriber.objects.get()
    assert subscriber.confirmed_at is None
    assert not subscriber.all_components and list(subscriber.components.all()) == [components["us"]]
    assert (subscriber.notify_incidents, subscriber.notify_maintenance, subscriber.notify_postmortems) == (
        True,
        False,
        False,
    )
    assert subscriber.minimum_impact == "major"


def test_without_a_broker_the_request_sends_nothing_and_the_timer_loop_sends_it(
    client: Client, mailoutbox: list[EmailMessage], django_capture_on_commit_callbacks: Capture, settings: Any
) -> None:
    """No SMTP in the web request: a slow mail server cannot hold it, and its timing tells nothing."""
    from django.core.management import call_command

    settings.DELIVER_EAGERLY = False
    response = sign_up(client, django_capture_on_commit_callbacks, "ada@example.com")
    assert response.status_code == 200
    assert mailoutbox == []

    call_command("run_timers", stdout=StringIO())  # one pass, as the loop does

    assert [message.to for message in mailoutbox] == [["ada@example.com"]]


def test_it_gives_the_same_answer_whatever_the_address_has_done(
    client: Client, mailoutbox: list[EmailMessage], django_capture_on_commit_callbacks: Capture
) -> None:
    subscribed(django_capture_on_commit_callbacks, "pending@example.com", confirm=False)
    subscribed(django_capture_on_commit_callbacks, "confirmed@example.com")
    actions.unsubscribe(subscribed(django_capture_on_commit_callbacks, "gone@example.com"))
    mailoutbox.clear()

    answers = {}
    for state in ("new", "pending", "confirmed", "gone"):
        email = f"{state}@example.com"
        response = sign_up(client, django_capture_on_commit_callbacks, email)
        answers[state] = (response.status_code, template_names(response), text(response).replace(email, "ADDRESS"))

    assert answers["new"][0] == 200 and SENT in answers["new"][2] and "ADDRESS" in answers["new"][2]
    assert answers["pending"] == answers["confirmed"] == answers["gone"] == answers["new"]
    # Behind the same answer: each address got one email (the subscribed one is told nothing changed).
    assert sorted(m.to[0] for m in mailoutbox) == sorted(f"{s}@example.com" for s in answers)


def test_it_shows_what_is_wrong_next_to_the_field(
    client: Client,
    components: dict[str, Component],
    mailoutbox: list[EmailMessage],
    django_capture_on_commit_callbacks: Capture,
) -> None:
    response = sign_up(client, django_capture_on_commit_callbacks, "not-an-address")

    assert response.status_code == 422
    html = text(response)
    field = re.search(
        r'<input type="email" name="email"[^>]*>\s*<ul class="sub-errors" id="id_email_error">(.*?)</ul>', html, re.S
    )
    assert field is not None and "Enter a valid email address" in field.group(1)
    assert 'aria-invalid="true"' in field.group() and 'aria-describedby="id_email_error"' in field.group()
    assert 'value="not-an-address"' in html  # what was typed stays, to be corrected
    assert not Subscriber.objects.exists() and mailoutbox == []

    response = sign_up(client, django_capture_on_commit_callbacks, "ada@example.com", scope="some", kinds=[])
    assert response.status_code == 422
    html = text(response)
    assert re.search(r'id="id_components_error"><li>Choose at least one component, or all of them.', html)
    assert re.search(r'id="id_kinds_error"><li>Choose at least one kind of update.', html)
    assert not Subscriber.objects.exists() and mailoutbox == []


REFUSED_ADDRESSES = [
    # An encoded word: valid by the RFC's grammar, but the mail library decodes it, and Django's SMTP
    # backend refuses to send to it (a review found it blocking everyone's email in one batch).
    ("=?utf-8?q?p?=@example.test", "“=?…?=” is an encoding for mail headers, not part of an address."),
    ("ann@localhost", "mail to localhost never leaves our own server."),
    ("ann@sub.localhost", "mail to localhost never leaves our own server."),
    # The issue 12 review: both were taken.
    ("ann@localhost.localdomain", "mail to localhost never leaves our own server."),
    ("ann@ex\u200bample.com", "without spaces or invisible characters"),
    ("ann@[127.0.0.1]", "not at an IP address."),
    ("ann@[::1]", "not at an IP address."),
    ('"ann"@example.com', "without quotation marks."),
    ("ann.@example.com", "Enter a valid email address"),
    ("ännchen@example.com", "Enter a valid email address"),
]


@pytest.mark.parametrize(("address", "reason"), REFUSED_ADDRESSES)
def test_it_refuses_addresses_our_mail_cannot_reach_next_to_the_field(
    client: Client,
    components: dict[str, Component],
    mailoutbox: list[EmailMessage],
    django_capture_on_commit_callbacks: Capture,
    address: str,
    reason: str,
) -> None:
    response = sign_up(client, django_capture_on_commit_callbacks, address)

    assert response.status_code == 422
    html = text(response)
    field = re.search(
        r'<input type="email" name="email"[^>]*>\s*<ul class="sub-errors" id="id_email_error">(.*?)</ul>', html, re.S
    )
    assert field is not None and escape(reason) in field.group(1), html
    assert not Subscriber.objects.exists() and mailoutbox == []
    # Any other way in (the API, a command, the admin) goes through the action, which refuses it too.
    with pytest.raises(ActionRefused) as refused:
        actions.subscribe(email=address)
    assert refused.value.field == "email" and reason in refused.value.message
    assert not Subscriber.objects.exists()


def test_it_takes_ordinary_addresses(db: None) -> None:
    for address in ["ann@example.com", "ann.o'neil+status@mail.example.co.uk", "bob@bücher.example", "x_y-z@a-b.io"]:
        assert actions.subscribe(email=address).email == address


def test_it_answers_a_filled_trap_the_same_and_does_nothing(
    client: Client, mailoutbox: list[EmailMessage], django_capture_on_commit_callbacks: Capture
) -> None:
    trapped = sign_up(client, django_capture_on_commit_callbacks, "bot@example.com", website="http://spam.example")
    assert not Subscriber.objects.exists() and mailoutbox == []

    genuine = sign_up(client, django_capture_on_commit_callbacks, "ada@example.com")
    assert (trapped.status_code, template_names(trapped)) == (genuine.status_code, template_names(genuine))
    assert text(trapped).replace("bot@example.com", "X") == text(genuine).replace("ada@example.com", "X")
    assert [s.email for s in Subscriber.objects.all()] == ["ada@example.com"]


# --- rate limits --------------------------------------------------------------------------------


def test_it_limits_sign_ups_from_one_client(
    client: Client,
    mailoutbox: list[EmailMessage],
    django_capture_on_commit_callbacks: Capture,
    frozen: time_machine.Traveller,
) -> None:
    for n in range(5):
        assert sign_up(client, django_capture_on_commit_callbacks, f"user{n}@example.com").status_code == 200
    assert len(mailoutbox) == 5

    response = sign_up(client, django_capture_on_commit_callbacks, "one-too-many@example.com")

    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 600
    assert "Too many sign-ups" in text(response) and "Nothing was sent" in text(response)
    assert len(mailoutbox) == 5 and not Subscriber.objects.filter(email="one-too-many@example.com").exists()
    # Another client is not held up, and this one may try again once the window has passed.
    other = Client(REMOTE_ADDR="192.0.2.9")
    assert sign_up(other, django_capture_on_commit_callbacks, "neighbour@example.com").status_code == 200
    frozen.shift(int(response["Retry-After"]))
    assert sign_up(client, django_capture_on_commit_callbacks, "one-too-many@example.com").status_code == 200
    assert mailoutbox[-1].to == ["one-too-many@example.com"]


def test_it_limits_sign_ups_for_one_address(
    mailoutbox: list[EmailMessage], django_capture_on_commit_callbacks: Capture
) -> None:
    for n in range(3):
        response = sign_up(Client(REMOTE_ADDR=f"192.0.2.{n}"), django_capture_on_commit_callbacks, "ada@example.com")
        assert response.status_code == 200

    response = sign_up(Client(REMOTE_ADDR="198.51.100.7"), django_capture_on_commit_callbacks, "ADA@example.com")

    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 3600
    assert len(mailoutbox) == 1  # and actions.subscribe itself sends an address one email an hour


def test_it_trusts_x_forwarded_for_only_when_told_to(
    settings: Any, django_capture_on_commit_callbacks: Capture
) -> None:
    def from_(forwarded_for: str, email: str) -> int:
        client = Client(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=forwarded_for)
        return int(sign_up(client, django_capture_on_commit_callbacks, email).status_code)

    # By default a client cannot dodge the limit by sending a different X-Forwarded-For each time.
    assert [from_(f"203.0.113.{n}", f"a{n}@example.com") for n in range(6)] == [200] * 5 + [429]

    # Behind a proxy that appends the client's address (deploy/nginx.conf), that last entry is the client.
    settings.TRUST_X_FORWARDED_FOR = True
    assert [from_(f"198.51.100.{n}, 192.0.2.7", f"b{n}@example.com") for n in range(6)] == [200] * 5 + [429]
    assert from_("192.0.2.8", "c@example.com") == 200


# --- confirming ---------------------------------------------------------------------------------


def test_it_confirms_on_post_and_not_on_get(
    client: Client, mailoutbox: list[EmailMessage], django_capture_on_commit_callbacks: Capture
) -> None:
    sign_up(client, django_capture_on_commit_callbacks, "ada@example.com")
    confirm_url = links(mailoutbox[0])["confirm"]

    page = client.get(confirm_url)  # what a link scanner does
    assert page.status_code == 200
    assert "Confirm subscription" in text(page) and 'method="post"' in text(page)
    assert Subscriber.objects.get().confirmed_at is None

    response = client.post(confirm_url)
    assert response.status_code == 303 and response["Location"] == confirm_url
    assert Subscriber.objects.get().confirmed_at == T0

    done = client.get(confirm_url)
    assert "You’re subscribed" in text(done)
    manage_url = re.search(r'href="(/subscribe/manage/[^"]+)"', text(done))
    assert manage_url is not None and client.get(manage_url.group(1)).status_code == 200


def test_it_explains_an_expired_confirmation_link(
    client: Client,
    mailoutbox: list[EmailMessage],
    django_capture_on_commit_callbacks: Capture,
    frozen: time_machine.Traveller,
) -> None:
    sign_up(client, django_capture_on_commit_callbacks, "ada@example.com")
    confirm_url = links(mailoutbox[0])["confirm"]
    frozen.shift(timedelta(days=8))

    for response in (client.get(confirm_url), client.post(confirm_url)):
        assert response.status_code == 400
        assert "This link has expired. Subscribe again to get a new one." in text(response)
        assert 'href="/subscribe"' in text(response)
    assert Subscriber.objects.get().confirmed_at is None


def test_it_refuses_a_tampered_link(client: Client, django_capture_on_commit_callbacks: Capture) -> None:
    subscriber = subscribed(django_capture_on_commit_callbacks, "ada@example.com", confirm=False)
    token = make_token(subscriber, "confirm")
    tampered = token[:-3] + ("aaa" if not token.endswith("aaa") else "bbb")

    response = client.post(f"/subscribe/confirm/{tampered}")
    assert response.status_code == 400
    assert "This link is not valid. Check that it was copied whole." in text(response)
    # A link made for another purpose does not work here either.
    assert client.post(f"/subscribe/confirm/{make_token(subscriber, 'unsubscribe')}").status_code == 400
    assert client.post(f"/subscribe/unsubscribe/{tampered}").status_code == 400
    subscriber.refresh_from_db()
    assert subscriber.confirmed_at is None and subscriber.unsubscribed_at is None


# --- managing -----------------------------------------------------------------------------------


def test_it_changes_choices_on_the_manage_page_and_they_take_effect(
    client: Client,
    staff: User,
    components: dict[str, Component],
    mailoutbox: list[EmailMessage],
    django_capture_on_commit_callbacks: Capture,
) -> None:
    subscriber = subscribed(django_capture_on_commit_callbacks, "ada@example.com")
    manage_url = f"/subscribe/manage/{make_token(subscriber, 'manage')}"
    page = text(client.get(manage_url))
    assert re.search(r'name="scope" value="all"[^>]* checked', page)
    assert "ada@example.com" in page

    response = client.post(
        manage_url,
        {"scope": "some", "components": [components["us"].pk], "kinds": ["incidents"], "minimum_impact": "major"},
    )

    assert response.status_code == 303 and response["Location"] == manage_url
    page = text(client.get(manage_url))
    assert "Saved." in page
    assert re.search(r'name="scope" value="some"[^>]* checked', page)
    assert re.search(rf'name="components" value="{components["us"].pk}"[^>]* checked', page)
    assert not re.search(rf'name="components" value="{components["eu"].pk}"[^>]* checked', page)
    assert not re.search(r'name="kinds" value="maintenance"[^>]* checked', page)
    assert re.search(r'name="minimum_impact" value="major"[^>]* checked', page)
    mailoutbox.clear()

    def declare(component: str, status: str) -> None:
        with django_capture_on_commit_callbacks(execute=True):
            factories.declare(actor=staff, title=f"{component} {status}", components={components[component]: status})

    declare("eu", "major_outage")  # a component they did not choose
    declare("us", "degraded_performance")  # theirs, but only minor impact
    start = T0 + timedelta(days=1)
    with django_capture_on_commit_callbacks(execute=True):  # maintenance: a kind they turned off
        actions.schedule_maintenance(
            actor=staff, title="Upgrade", scheduled_for=start, scheduled_until=start + timedelta(hours=1),
            components=[components["us"]],
        )  # fmt: skip
    assert mailoutbox == []

    declare("us", "major_outage")  # theirs, critical impact
    assert [m.to for m in mailoutbox] == [["ada@example.com"]]
    assert "us major_outage" in str(mailoutbox[0].subject)


def test_it_keeps_the_choices_when_the_form_is_wrong(
    client: Client, components: dict[str, Component], django_capture_on_commit_callbacks: Capture
) -> None:
    subscriber = subscribed(django_capture_on_commit_callbacks, "ada@example.com")
    manage_url = f"/subscribe/manage/{make_token(subscriber, 'manage')}"

    response = client.post(manage_url, {"scope": "all", "kinds": [], "minimum_impact": "none"})

    assert response.status_code == 422
    assert re.search(r'id="id_kinds_error"><li>Choose at least one kind of update.', text(response))
    subscriber.refresh_from_db()
    assert subscriber.notify_incidents and subscriber.notify_maintenance and subscriber.notify_postmortems


# --- unsubscribing ------------------------------------------------------------------------------


def test_it_asks_before_unsubscribing_on_get(client: Client, django_capture_on_commit_callbacks: Capture) -> None:
    subscriber = subscribed(django_capture_on_commit_callbacks, "ada@example.com")

    response = client.get(f"/subscribe/unsubscribe/{make_token(subscriber, 'unsubscribe')}")

    assert response.status_code == 200
    assert "Stop all" in text(response) and 'method="post"' in text(response)
    subscriber.refresh_from_db()
    assert subscriber.unsubscribed_at is None


def test_it_unsubscribes_in_one_click_without_a_csrf_token(
    staff: User,
    components: dict[str, Component],
    mailoutbox: list[EmailMessage],
    django_capture_on_commit_callbacks: Capture,
) -> None:
    subscriber = subscribed(django_capture_on_commit_callbacks, "ada@example.com")
    mail_provider = Client(enforce_csrf_checks=True)

    response = mail_provider.post(
        f"/subscribe/unsubscribe/{make_token(subscriber, 'unsubscribe')}",
        "List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )

    assert response.status_code == 200
    assert "You’re unsubscribed" in text(response)
    subscriber.refresh_from_db()
    assert subscriber.unsubscribed_at == T0
    mailoutbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        factories.declare(actor=staff, components={components["us"]: "major_outage"})
    assert mailoutbox == []
    # The manage link now says so, and only a new sign-up (confirmed again) brings the emails back.
    assert "You’re unsubscribed" in text(mail_provider.get(f"/subscribe/manage/{make_token(subscriber, 'manage')}"))


def test_it_puts_the_unsubscribe_page_in_the_list_unsubscribe_header(
    client: Client,
    staff: User,
    components: dict[str, Component],
    mailoutbox: list[EmailMessage],
    django_capture_on_commit_callbacks: Capture,
) -> None:
    subscribed(django_capture_on_commit_callbacks, "ada@example.com")
    mailoutbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        factories.declare(actor=staff, components={components["us"]: "major_outage"})
    [email] = mailoutbox

    header = str(email.extra_headers["List-Unsubscribe"])
    assert email.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    match = re.fullmatch(r"<(https?://[^/]+)(/subscribe/unsubscribe/[^>]+)>", header)
    assert match is not None and match.group(1) == settings.SITE_URL
    assert match.group(2) == links(email)["unsubscribe"]  # the same page as the link in the footer

    response = Client(enforce_csrf_checks=True).post(
        match.group(2), "List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 200
    assert Subscriber.objects.get().unsubscribed_at is not None


def test_it_takes_an_address_back_after_it_unsubscribed(
    client: Client, mailoutbox: list[EmailMessage], django_capture_on_commit_callbacks: Capture
) -> None:
    subscriber = subscribed(django_capture_on_commit_callbacks, "ada@example.com")
    old_unsubscribe = f"/subscribe/unsubscribe/{make_token(subscriber, 'unsubscribe')}"
    old_confirm = f"/subscribe/confirm/{make_token(subscriber, 'confirm')}"
    client.post(old_unsubscribe)
    assert client.post(old_confirm).status_code == 409  # unsubscribed: confirming an old link does nothing
    mailoutbox.clear()

    sign_up(client, django_capture_on_commit_callbacks, "ada@example.com")
    client.post(links(mailoutbox[0])["confirm"])

    subscriber.refresh_from_db()
    assert subscriber.confirmed_at is not None and subscriber.unsubscribed_at is None
    assert client.get(old_unsubscribe).status_code == 400  # links from before are dead


# --- the public pages link here -----------------------------------------------------------------


def test_it_is_linked_from_the_public_pages(client: Client, components: dict[str, Component]) -> None:
    publishing.publish()

    for path in ("/", "/history", "/uptime"):
        html = text(client.get(path))
        assert f'href="{settings.SITE_URL}/subscribe"' in html, path
    assert 'href="/subscribe"' not in text(client.get("/"))  # absolute: the static export lives elsewhere


def test_links_in_emails_sent_before_tokens_were_uncompressed_still_work(db: None) -> None:
    from django.core import signing

    from incidents.tokens import make_token, read_token

    subscriber = actions.subscribe(email="old@example.com")
    older = signing.dumps([subscriber.pk, subscriber.secret], salt="signalpost.subscriber.manage", compress=True)
    assert read_token(older, "manage") == subscriber
    assert read_token(make_token(subscriber, "manage"), "manage") == subscriber


def test_tokens_are_what_djangos_signer_makes(db: None, settings: Any) -> None:
    """make_tokens writes signing.dumps out by hand (one HMAC per token, a shared payload): the bytes
    must stay Django's, so that read_token (signing.loads) and SECRET_KEY_FALLBACKS keep working."""
    from django.core import signing

    from incidents.tokens import make_tokens, read_token

    subscriber = actions.subscribe(email="same@example.com")
    with time_machine.travel(datetime(2026, 5, 1, 12, 0, 7, tzinfo=UTC), tick=False):
        made = make_tokens(subscriber, "manage", "unsubscribe", "confirm")
        for purpose, token in made.items():
            salt = f"signalpost.subscriber.{purpose}"
            assert token == signing.dumps([subscriber.pk, subscriber.secret], salt=salt), purpose
            assert read_token(token, purpose) == subscriber
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-new-key-" + "x" * 50
    assert read_token(made["manage"], "manage") == subscriber  # signed with the old key, still read
    assert make_tokens(subscriber, "manage")["manage"] != made["manage"]
