"""Signed, expiring tokens for subscribers' links: no account, no password, nothing guessable.

Each token signs the subscriber's id with their `secret`; rotating the secret revokes every link.
Confirmation links expire after CONFIRM_MAX_AGE; manage and unsubscribe links do not (they must work
from an old email), but they are useless once the subscriber is deleted or the secret changes.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from functools import lru_cache

from django.conf import settings
from django.core import signing

from incidents.models import Subscriber

CONFIRM_MAX_AGE = timedelta(days=7)
PURPOSES = {"confirm", "manage", "unsubscribe"}


class BadToken(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def new_secret() -> str:
    return secrets.token_hex(16)


@lru_cache(maxsize=16)
def _signer(purpose: str, key: str) -> signing.TimestampSigner:
    return signing.TimestampSigner(key=key, salt=f"signalpost.subscriber.{purpose}")


def make_token(subscriber: Subscriber, purpose: str) -> str:
    """What signing.dumps(…, salt=…) makes, with a signer kept per purpose (and per SECRET_KEY): every
    email carries two of these, and building a signer for each was a measurable part of sending.
    Not compressed: the payload is too small for zlib to shorten. read_token reads both forms."""
    assert purpose in PURPOSES
    return _signer(purpose, settings.SECRET_KEY).sign_object([subscriber.pk, subscriber.secret])


def read_token(token: str, purpose: str) -> Subscriber:
    """The subscriber a token is for, or BadToken saying what is wrong with it."""
    max_age = CONFIRM_MAX_AGE if purpose == "confirm" else None
    try:
        subscriber_id, secret = signing.loads(token, salt=f"signalpost.subscriber.{purpose}", max_age=max_age)
    except signing.SignatureExpired:
        raise BadToken("This link has expired. Subscribe again to get a new one.") from None
    except (signing.BadSignature, ValueError, TypeError):
        raise BadToken("This link is not valid. Check that it was copied whole.") from None
    subscriber = Subscriber.objects.filter(pk=subscriber_id, secret=secret).first()
    if subscriber is None:
        raise BadToken("This link is no longer valid.")
    return subscriber
