"""Signed, expiring tokens for subscribers' links: no account, no password, nothing guessable.

Each token signs the subscriber's id with their `secret`; rotating the secret revokes every link.
Confirmation links expire after CONFIRM_MAX_AGE; manage and unsubscribe links do not (they must work
from an old email), but they are useless once the subscriber is deleted or the secret changes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from datetime import timedelta
from functools import lru_cache

from django.conf import settings
from django.core import signing
from django.utils.encoding import force_bytes

from incidents.models import Subscriber

CONFIRM_MAX_AGE = timedelta(days=7)
PURPOSES = {"confirm", "manage", "unsubscribe"}


class BadToken(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def new_secret() -> str:
    return secrets.token_hex(16)


def _salt(purpose: str) -> str:
    return f"signalpost.subscriber.{purpose}"


@lru_cache(maxsize=16)
def _hmac_key(purpose: str, secret_key: str) -> bytes:
    """The key TimestampSigner(key=SECRET_KEY, salt=…) derives for every signature (salted_hmac):
    sha256(salt + "signer" + SECRET_KEY), worked out once per purpose (and per SECRET_KEY)."""
    return hashlib.sha256(force_bytes(_salt(purpose) + "signer") + force_bytes(secret_key)).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_tokens(subscriber: Subscriber, *purposes: str) -> dict[str, str]:
    """Tokens for one subscriber, by purpose: what signing.dumps([pk, secret], salt=…) makes,
    byte for byte (JSON, base64, a base-62 timestamp, HMAC-SHA256 with the key salted_hmac would
    derive), written out so that an email's tokens share their payload and timestamp and each costs
    one HMAC: every email carries two, and Django's signer object path was a measurable part of
    sending. Not compressed: the payload is too small for zlib to shorten. read_token reads both
    forms, and SECRET_KEY_FALLBACKS still verify (read_token goes through signing.loads)."""
    payload = _b64(json.dumps([subscriber.pk, subscriber.secret], separators=(",", ":")).encode("latin-1"))
    value = f"{payload}:{signing.b62_encode(int(time.time()))}"
    message = value.encode()
    found = {}
    for purpose in purposes:
        assert purpose in PURPOSES
        signature = hmac.digest(_hmac_key(purpose, settings.SECRET_KEY), message, "sha256")
        found[purpose] = f"{value}:{_b64(signature)}"
    return found


def make_token(subscriber: Subscriber, purpose: str) -> str:
    return make_tokens(subscriber, purpose)[purpose]


def read_token(token: str, purpose: str) -> Subscriber:
    """The subscriber a token is for, or BadToken saying what is wrong with it."""
    max_age = CONFIRM_MAX_AGE if purpose == "confirm" else None
    try:
        subscriber_id, secret = signing.loads(token, salt=_salt(purpose), max_age=max_age)
    except signing.SignatureExpired:
        raise BadToken("This link has expired. Subscribe again to get a new one.") from None
    except (signing.BadSignature, ValueError, TypeError):
        raise BadToken("This link is not valid. Check that it was copied whole.") from None
    subscriber = Subscriber.objects.filter(pk=subscriber_id, secret=secret).first()
    if subscriber is None:
        raise BadToken("This link is no longer valid.")
    return subscriber
