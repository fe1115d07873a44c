"""Delivery of messages to subscribers: an outbox that loses nothing and repeats at most what was in flight.

A Message is fanned out into one Delivery row per matching subscriber (unique on message and
subscriber, so a re-run adds nothing). Workers claim due rows in batches under a lock and a fence
token, send a batch over one connection, and mark each row as it goes. A transient failure puts the
row back with exponential backoff and full jitter, up to DELIVERY_MAX_ATTEMPTS; a permanent one (the
server refuses the recipient with a 5xx) fails it with the reason. A circuit breaker per destination (the
SMTP server; each webhook host) opens after BREAKER_THRESHOLD consecutive failures, stops sending there,
lets one probe through after a cool-down and closes when it succeeds. Whatever goes wrong with one row
(its address, building it, the server hanging up on it, any exception) fails or retries that row
alone, on its own backoff; the batch goes on. While a batch is being sent, a thread renews its claim
(Heartbeat), so the claim timeout can be short: a sweep puts back rows whose worker died holding them
within DELIVERY_CLAIM_TIMEOUT_SECONDS, and never takes a living worker's.

The guarantee is at least once: a row is marked sent right after the server accepts it, so a worker
killed between the two sends that one email again (the same Message-ID) after the claim times out.
"""

from __future__ import annotations

import logging
import random
import re
import select
import smtplib
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core import mail
from django.core.mail.backends.smtp import EmailBackend as SMTPBackend
from django.db import connection, connections, transaction
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone

from incidents.models import (
    IMPACT_RANK,
    BreakerState,
    CircuitBreaker,
    Delivery,
    DeliveryStatus,
    Impact,
    Message,
    MessageKind,
    Subscriber,
    SubscriberKind,
)

log = logging.getLogger(__name__)

BATCH_SIZE = 100
EMAIL = "email"
# The timings are settings (DELIVERY_*, BREAKER_*), read when used, so tests and operators can tune them.


class TransientError(Exception):
    """Worth another try later: the server is down, slow, or said 4xx."""


class PermanentError(Exception):
    """Never worth another try: the server refused this recipient for good (5xx)."""


def backoff(attempts: int, rng: random.Random | None = None) -> timedelta:
    """Full jitter: a random wait up to base·2^(attempts-1), capped, so retries never arrive in step."""
    base, cap = settings.DELIVERY_BACKOFF_SECONDS, settings.DELIVERY_BACKOFF_CAP_SECONDS
    ceiling = min(cap, base * 2 ** max(0, attempts - 1))
    return timedelta(seconds=(rng or random).uniform(0, ceiling))


# --- fan-out ------------------------------------------------------------------------------------


def recipients(message: Message) -> QuerySet[Subscriber]:
    """The active subscribers whose choices match the message (kinds, components, minimum impact)."""
    if message.kind == MessageKind.CONFIRMATION:
        return Subscriber.objects.filter(id=message.subscriber_id or 0, unsubscribed_at__isnull=True)
    if message.kind == MessageKind.COMPONENT_UPDATE:
        return Subscriber.objects.filter(
            Q(all_components=True) | Q(components__in=message.component_ids),
            kind=SubscriberKind.WEBHOOK,
            unsubscribed_at__isnull=True,
        ).distinct()
    active = Subscriber.objects.filter(unsubscribed_at__isnull=True).filter(
        Q(kind=SubscriberKind.WEBHOOK) | Q(confirmed_at__isnull=False)
    )
    if message.kind == MessageKind.INCIDENT_UPDATE:
        impacts = [i for i in Impact.values if IMPACT_RANK[Impact(i)] <= IMPACT_RANK[Impact(message.impact)]]
        active = active.filter(notify_incidents=True, minimum_impact__in=impacts)
    elif message.kind == MessageKind.MAINTENANCE:
        active = active.filter(notify_maintenance=True)
    elif message.kind == MessageKind.MAINTENANCE_REMINDER:
        # Email only: Statuspage's webhooks carry changes, and a reminder changes nothing (its body
        # would repeat the "scheduled" one byte for byte).
        active = active.filter(notify_maintenance=True, kind=SubscriberKind.EMAIL)
    elif message.kind == MessageKind.POSTMORTEM:
        active = active.filter(notify_postmortems=True)
    if message.component_ids:
        active = active.filter(Q(all_components=True) | Q(components__in=message.component_ids)).distinct()
    return active


def fan_out(message_id: int) -> int:
    """Create the message's deliveries; safe to run again (the unique key drops repeats)."""
    message = Message.objects.filter(pk=message_id).first()
    if message is None:
        return 0
    before = Delivery.objects.filter(message=message).count()
    found = list(recipients(message).values_list("pk", "kind"))
    for start in range(0, len(found), 1000):
        rows = [Delivery(message=message, subscriber_id=pk, transport=kind) for pk, kind in found[start : start + 1000]]
        Delivery.objects.bulk_create(rows, ignore_conflicts=True)
    Message.objects.filter(pk=message.pk, fanned_out_at__isnull=True).update(fanned_out_at=timezone.now())
    # bulk_create with ignore_conflicts returns every row it tried; count what is really new.
    return Delivery.objects.filter(message=message).count() - before


# --- the circuit breaker ------------------------------------------------------------------------


def breaker(transport: str) -> CircuitBreaker:
    found, _ = CircuitBreaker.objects.get_or_create(transport=transport)
    return found


PROBE = 1  # what may_send lets through while a breaker is open: one delivery, to see if it is back


def may_send(transport: str, now: datetime) -> int:
    """How many deliveries the breaker lets through now: a batch, one probe, or none.

    Exactly one caller wins the probe (a conditional update), and the next probe is pushed a
    cool-down ahead, so a probe whose worker died is followed by another, never by a stampede.
    """
    state = breaker(transport)
    if state.state == BreakerState.CLOSED:
        return BATCH_SIZE
    won = CircuitBreaker.objects.filter(
        pk=state.pk, state__in=[BreakerState.OPEN, BreakerState.HALF_OPEN], retry_at__lte=now
    ).update(state=BreakerState.HALF_OPEN, retry_at=now + timedelta(seconds=settings.BREAKER_COOLDOWN_SECONDS))
    return PROBE if won else 0


def record_success(transport: str) -> None:
    CircuitBreaker.objects.filter(transport=transport).exclude(
        state=BreakerState.CLOSED, consecutive_failures=0
    ).update(state=BreakerState.CLOSED, consecutive_failures=0, opened_at=None, retry_at=None, last_error="")


def record_failure(transport: str, error: str, now: datetime) -> bool:
    """Count a failure; returns whether the breaker is open now."""
    state = breaker(transport)
    failures = state.consecutive_failures + 1
    opens = state.state == BreakerState.HALF_OPEN or failures >= settings.BREAKER_THRESHOLD
    CircuitBreaker.objects.filter(pk=state.pk).update(
        consecutive_failures=failures,
        last_error=error[:500],
        state=BreakerState.OPEN if opens else state.state,
        opened_at=now if opens and state.state != BreakerState.OPEN else F("opened_at"),
        retry_at=now + timedelta(seconds=settings.BREAKER_COOLDOWN_SECONDS) if opens else state.retry_at,
    )
    if opens and state.state != BreakerState.OPEN:
        log.warning(
            "%s: sending paused after %d failures in a row (%s); next try in %d s",
            transport, failures, error[:200], settings.BREAKER_COOLDOWN_SECONDS,
        )  # fmt: skip
    return opens or state.state == BreakerState.OPEN


# --- claiming and sending -----------------------------------------------------------------------


@dataclass
class Batch:
    claim: str
    deliveries: list[Delivery]
    renewed_at: datetime


def claim_batch(now: datetime, limit: int = BATCH_SIZE, transport: str = EMAIL) -> Batch | None:
    """Take up to `limit` due rows for this worker: marked sending under a fence token."""
    token = uuid.uuid4().hex
    with transaction.atomic():
        # Served by delivery_due_idx (transport, next_attempt_at, id where pending): no join, however
        # many subscribers there are or however stale the planner's statistics. A row waits while an
        # earlier message to its subscriber is unsent (a probe of delivery_unsent_idx), so that after
        # an outage, whose jittered retries come due in any order, nobody reads "Resolved" before
        # "Investigating"; the earlier row is sent or fails for good within its bounded attempts.
        earlier = Delivery.objects.filter(
            subscriber=OuterRef("subscriber"),
            message__lt=OuterRef("message"),
            status__in=[DeliveryStatus.PENDING, DeliveryStatus.SENDING],
        )
        due = (
            Delivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now, transport=transport)
            .exclude(Exists(earlier))
            .order_by("next_attempt_at", "id")
        )
        if connection.features.has_select_for_update_skip_locked:
            due = due.select_for_update(skip_locked=True, of=("self",))
        ids = list(due.values_list("pk", flat=True)[:limit])
        if not ids:
            return None
        Delivery.objects.filter(pk__in=ids).update(status=DeliveryStatus.SENDING, claim=token, claimed_at=now)
    rows = list(Delivery.objects.filter(pk__in=ids, claim=token).select_related("subscriber").order_by("id"))
    # A batch is mostly one message to many people: load each message (and what it is about) once.
    messages = Message.objects.select_related(
        "incident", "incident_update", "maintenance", "maintenance_update", "postmortem"
    ).in_bulk({row.message_id for row in rows})
    for row in rows:
        row.message = messages[row.message_id]
    return Batch(token, rows, now)


def _fenced(delivery: Delivery, claim: str) -> QuerySet[Delivery]:
    """The row, only while this batch still holds it (a sweep may have handed it to another worker)."""
    return Delivery.objects.filter(pk=delivery.pk, claim=claim, status=DeliveryStatus.SENDING)


_MARK_SENT = (
    "UPDATE {table} SET status = %s, sent_at = %s, attempts = attempts + 1, claim = '', last_error = '' "
    "WHERE id = %s AND claim = %s AND status = %s"
)


def mark_sent(delivery: Delivery, claim: str, now: datetime) -> None:
    """The fenced update, as one statement written out: it runs once per email, and building it through
    the ORM each time cost more than executing it."""
    sql = _MARK_SENT.format(table=connection.ops.quote_name(Delivery._meta.db_table))
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            [
                DeliveryStatus.SENT.value,
                connection.ops.adapt_datetimefield_value(now),
                delivery.pk,
                claim,
                DeliveryStatus.SENDING.value,
            ],
        )


_PREPARED_MARK = b"signalpost_mark_sent"


class SentMarks:
    """Marks each row sent right after the SMTP server accepts its email, for one batch.

    On PostgreSQL (in autocommit, with nobody logging queries), the mark is a prepared statement sent
    without waiting for its answer, and the answer is read in wait(), which the batch calls before the
    next email goes out. The server commits the mark while the worker builds that email, instead of the
    worker sleeping on a round trip per email (and the server planning the update each time, which cost
    it more than running it). The guarantee does not change: the mark leaves as soon as the server
    accepts the email, as before, and commits on its own (autocommit) whether or not the worker lives to
    read the answer; no further email goes out until the answer says it committed, so a worker that dies
    repeats at most the one email in flight, and a mark that fails stops the batch before the next send.
    Any other query meanwhile reads the answer first (an execute wrapper), so the connection is never
    used with a statement outstanding.

    Elsewhere (SQLite, inside a transaction, DEBUG) mark() is mark_sent, which waits.
    """

    def __init__(self) -> None:
        self._stack = ExitStack()
        self._pgconn: Any = None
        self._pending: list[bytes] | None = None  # the parameters of the mark whose answer is unread
        if (
            connection.vendor == "postgresql"
            and not connection.queries_logged
            and connection.get_autocommit()
            and not connection.in_atomic_block
        ):
            if getattr(connection, "_sent_marks_prepared_on", None) is not connection.connection:
                self._prepare()
            self._pgconn = connection.connection.pgconn

    def __enter__(self) -> SentMarks:
        if self._pgconn is not None:
            self._stack.enter_context(connection.execute_wrapper(self._answer_first))
        return self

    def __exit__(self, *exc: object) -> None:
        with self._stack:
            self.wait()

    def mark(self, delivery: Delivery, claim: str, now: datetime) -> None:
        if self._pgconn is None:
            mark_sent(delivery, claim, now)
            return
        self.wait()
        when = str(connection.ops.adapt_datetimefield_value(now))
        sent, sending = DeliveryStatus.SENT.value.encode(), DeliveryStatus.SENDING.value.encode()
        params = [sent, when.encode(), str(delivery.pk).encode(), claim.encode(), sending]
        with connection.wrap_database_errors:
            self._pgconn.send_query_prepared(_PREPARED_MARK, params)
            self._pending = params
            while self._pgconn.flush():  # a non-blocking connection: the rest once the socket takes it
                readable, _, _ = select.select([self._pgconn.socket], [self._pgconn.socket], [])
                if readable:
                    self._pgconn.consume_input()

    def wait(self) -> None:
        """Read the answer to the last mark; raises (as Django would) if it failed."""
        params, self._pending = self._pending, None
        if params is None:
            return
        import psycopg  # here, after the return above: SQLite never needs it (importing it takes 0.1-0.2 s)

        with connection.wrap_database_errors:
            results = []
            while (result := self._pgconn.get_result()) is not None:
                results.append(result)
            try:
                self._check(results)
            except psycopg.errors.InvalidSqlStatementName:
                # The statement is gone (DEALLOCATE ALL, a connection pooler): prepare it again and run
                # the mark now, before any further email. It failed whole, so running it repeats nothing.
                self._prepare()
                self._check([self._pgconn.exec_prepared(_PREPARED_MARK, params)])
            except Exception:
                connection._sent_marks_prepared_on = None  # type: ignore[attr-defined]  # prepare afresh
                raise

    @staticmethod
    def _prepare() -> None:
        """Prepare the mark on this connection (kept by the server until the connection closes). The
        statuses stay parameters: with 'sending' written in, the planner picks delivery_claimed_idx and
        reads every row being sent (as the unprepared mark_sent does, psycopg writing its parameters in);
        with a parameter, the generic plan finds the row by its primary key."""
        table = connection.ops.quote_name(Delivery._meta.db_table)
        sql = _MARK_SENT.format(table=table).replace("%s", "{}").format("$1", "$2", "$3", "$4", "$5")
        with connection.wrap_database_errors:
            SentMarks._check([connection.connection.pgconn.prepare(_PREPARED_MARK, sql.encode(), None)], "42P05")
        connection._sent_marks_prepared_on = connection.connection  # type: ignore[attr-defined]

    @staticmethod
    def _check(results: list[Any], ignore: str = "") -> None:
        """Raise psycopg's error for a failed result (but not for the SQLSTATE `ignore`)."""
        import psycopg

        for result in results:
            if result.status == psycopg.pq.ExecStatus.FATAL_ERROR:
                error = psycopg.errors.error_from_result(result)
                if error.sqlstate != ignore:
                    raise error

    def _answer_first(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        self.wait()
        return execute(sql, params, many, context)


def mark_failed(delivery: Delivery, claim: str, error: str) -> None:
    _fenced(delivery, claim).update(
        status=DeliveryStatus.FAILED, attempts=F("attempts") + 1, claim="", last_error=error[:500]
    )


def mark_retry(delivery: Delivery, claim: str, error: str, now: datetime, *, counts: bool = True) -> None:
    """Back to pending after a backoff; a row that has used its attempts fails instead."""
    attempts = delivery.attempts + (1 if counts else 0)
    if attempts >= settings.DELIVERY_MAX_ATTEMPTS:
        mark_failed(delivery, claim, f"gave up after {attempts} attempts: {error}")
        return
    _fenced(delivery, claim).update(
        status=DeliveryStatus.PENDING,
        attempts=attempts,
        next_attempt_at=now + backoff(max(1, attempts)),
        claim="",
        last_error=error[:500],
    )


def mark_deferred(delivery: Delivery, claim: str, transport: str, now: datetime) -> None:
    """Back to pending until the destination's breaker lets a probe through; no attempt is counted."""
    retry_at = CircuitBreaker.objects.filter(transport=transport).values_list("retry_at", flat=True).first()
    _fenced(delivery, claim).update(
        status=DeliveryStatus.PENDING,
        next_attempt_at=max(retry_at or now, now + timedelta(seconds=1)),
        claim="",
    )


def _reply(text: bytes | str) -> str:
    """An SMTP reply as people read it: '5.1.1 No such user', not b'5.1.1 No such user'."""
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)


def classify_smtp_error(error: Exception) -> Exception:
    """Map what smtplib raised to a permanent or transient failure of this one message."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        replies = list(error.recipients.values())
        codes = [code for code, _ in replies]
        if codes and all(500 <= code < 600 for code in codes):
            return PermanentError(f"recipient refused: {codes[0]} {_reply(replies[0][1])}")
        return TransientError("recipient deferred: " + "; ".join(f"{code} {_reply(text)}" for code, text in replies))
    if isinstance(error, smtplib.SMTPResponseException):
        if 500 <= error.smtp_code < 600 and not isinstance(error, smtplib.SMTPServerDisconnected):
            return PermanentError(f"{error.smtp_code} {_reply(error.smtp_error)}")
        return TransientError(f"{error.smtp_code} {_reply(error.smtp_error)}")
    return TransientError(f"{type(error).__name__}: {error}")


_ENHANCED_CODE = re.compile(rb"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")


def is_hard_bounce(error: Exception) -> bool:
    """Whether the server refused the recipient as an address that does not exist: 550, 551 or 553 with
    an enhanced status of 5.1.x (bad mailbox or domain), or with none. A refusal for policy or spam
    (5.7.x) or a full mailbox (5.2.x) is not: the address exists, and the next email may get through."""
    if not isinstance(error, smtplib.SMTPRecipientsRefused) or not error.recipients:
        return False
    for code, text in error.recipients.values():
        reply = text if isinstance(text, bytes) else str(text).encode()
        enhanced = _ENHANCED_CODE.match(reply)
        if code not in (550, 551, 553) or (enhanced and enhanced.group(1, 2) != (b"5", b"1")):
            return False
    return True


# Opening the connection can fail with any of these (SMTPException is itself an OSError).
CONNECTION_ERRORS = (smtplib.SMTPException, OSError)


def renew(batch: Batch, deliveries: list[Delivery], now: datetime, *, touch: bool = True) -> list[Delivery]:
    """Touch the claim on these rows and return those this batch still holds.

    A row is no longer ours when a sweep handed it on (our worker stalled past the claim timeout) or
    an unsubscribe stopped it. Called when a batch starts and again whenever a third of the claim
    timeout has passed since the last renewal: the sweep only takes rows claimed longer ago than the
    whole timeout, so between renewals no row can change hands, and checking each row before each
    send would cost a query per email for nothing. touch=False only checks: when a batch starts within
    that third of its claim, the claim's own timestamp is as good as a touch. (While one email blocks,
    the batch's Heartbeat keeps renewing the claim from its thread.)
    """
    ids = [delivery.pk for delivery in deliveries]
    if touch:
        Delivery.objects.filter(pk__in=ids, claim=batch.claim, status=DeliveryStatus.SENDING).update(claimed_at=now)
        batch.renewed_at = now
    held = set(
        Delivery.objects.filter(pk__in=ids, claim=batch.claim, status=DeliveryStatus.SENDING).values_list(
            "pk", flat=True
        )
    )
    return [delivery for delivery in deliveries if delivery.pk in held]


@contextmanager
def relaxed_commits() -> Iterator[None]:
    """On PostgreSQL, don't wait for the WAL flush when marking rows sent (synchronous_commit off).

    A mark is one commit per email, and waiting for the disk on each one cost more than sending the
    email. The trade is small and one-sided: a worker that dies loses nothing (the server has the
    commit); only a crash of PostgreSQL itself can lose the last few hundred milliseconds of marks,
    and those rows are then sent again, never lost, which is the guarantee anyway (at least once).
    """
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit TO off")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET synchronous_commit")


# How many times one batch opens a new connection after the server broke off one email's exchange, before
# it takes the server for down and leaves the rest to the backoff and the breaker.
RECONNECTS_PER_BATCH = 3


def send_email_batch(batch: Batch, now: datetime) -> tuple[int, int]:
    """Send a claimed batch over one SMTP connection; returns (sent, not sent).

    Whatever goes wrong with one email (its address, building it, the server refusing it or breaking
    off its exchange, any exception at all) fails that row alone: it is recorded with the reason and
    retried on its own backoff (or failed for good when retrying cannot help), and the rest of the
    batch goes on, over a new connection if the old one may be broken. Only a server that cannot be
    reached at all (or breaks off again and again) stops the batch.
    """
    from incidents import emails  # rendering imports templates; keep this module light
    from incidents.addresses import sending_problem

    sent = failed = refused = reconnects = 0
    in_flight = False  # an email is being handed to the server
    composer = emails.Composer()
    renew_every = timedelta(seconds=settings.DELIVERY_CLAIM_TIMEOUT_SECONDS / 3)
    started = timezone.now()
    remaining = renew(batch, batch.deliveries, started, touch=started - batch.renewed_at > renew_every)
    try:
        # A new connection from MAILERS["default"], fail_silently off.
        with relaxed_commits(), SentMarks() as marks, mail.mailers.default as smtp:
            # Django's own SMTP backend (not a subclass, which may sign or change what it sends) takes
            # merged bytes straight to its connection; any other backend gets EmailMessages.
            direct = smtp if isinstance(smtp, SMTPBackend) and type(smtp) is SMTPBackend and smtp.connection else None
            sender = direct.prep_address(settings.DEFAULT_FROM_EMAIL) if direct else ""

            def reconnect(reason: str) -> None:
                """After an email's exchange broke off (or raised something unexpected, which may leave the
                connection mid-command), go on over a new connection; raises when there is none."""
                nonlocal reconnects
                reconnects += 1
                if reconnects > RECONNECTS_PER_BATCH:
                    raise TransientError(f"the server broke off {reconnects} emails in one batch; last: {reason}")
                with suppress(Exception):
                    smtp.close()
                smtp.open()  # CONNECTION_ERRORS when the server is gone: the rest wait for the backoff

            while remaining:
                delivery = remaining[0]
                if timezone.now() - batch.renewed_at > renew_every:
                    remaining = renew(batch, remaining, timezone.now())
                    continue
                if not delivery.subscriber.is_active and delivery.message.kind != MessageKind.CONFIRMATION:
                    mark_failed(delivery, batch.claim, "the subscriber left before it was sent")
                    remaining.pop(0)
                    continue
                address = delivery.subscriber.email
                problem = None if emails.is_plain_address(address) else sending_problem(address)
                if problem is not None:  # from before sign-up was strict: no retry can help
                    mark_failed(delivery, batch.claim, f"cannot send to this address: {problem}")
                    if delivery.message.kind != MessageKind.CONFIRMATION:
                        from incidents.actions import unsubscribe  # the write path imports this module

                        unsubscribe(delivery.subscriber, at=now, bounce=f"cannot send to this address: {problem}")
                    failed += 1
                    remaining.pop(0)
                    continue
                try:
                    # Built now (merged from the message's MIME text where that is certain, whole
                    # otherwise): meanwhile the database commits the last email's mark, and
                    # marks.wait() below then finds the answer there.
                    outgoing = composer.outgoing(delivery, wire=direct is not None)
                except Exception as error:  # a template or data problem: this email only, on its own backoff
                    log.exception("could not build the email for delivery %s", delivery.pk)
                    reason = f"could not build the email: {type(error).__name__}: {error}"
                    mark_retry(delivery, batch.claim, reason, now)
                    failed += 1
                    remaining.pop(0)
                    continue
                marks.wait()  # the last email's row is marked sent before this one goes out
                in_flight = True
                broken = ""  # why the connection may be unusable after this email
                try:
                    if isinstance(outgoing, bytes):
                        assert direct is not None and direct.connection is not None
                        # What the backend's send_messages() does for one email, minus building it.
                        direct.connection.sendmail(sender, [address], outgoing)
                    else:
                        smtp.send_messages([outgoing])
                except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError) as error:
                    broken = f"{type(error).__name__}: {error}"
                except smtplib.SMTPException as error:  # this message only: the connection is still good
                    refusal = classify_smtp_error(error)
                    if isinstance(refusal, PermanentError):
                        mark_failed(delivery, batch.claim, str(refusal))
                        if is_hard_bounce(error) and delivery.message.kind != MessageKind.CONFIRMATION:
                            from incidents.actions import unsubscribe  # the write path imports this module

                            unsubscribe(delivery.subscriber, at=now, bounce=str(refusal))
                    else:
                        mark_retry(delivery, batch.claim, str(refusal), now)
                    failed += 1
                    refused += 1
                except OSError as error:  # socket errors and timeouts (SMTPException is an OSError too)
                    broken = f"{type(error).__name__}: {error}"
                except Exception as error:  # an address the backend refuses, a bug in a backend: this email only
                    log.exception("could not send the email for delivery %s", delivery.pk)
                    broken = f"could not send: {type(error).__name__}: {error}"
                else:
                    marks.mark(delivery, batch.claim, timezone.now())
                    sent += 1
                in_flight = False
                remaining.pop(0)
                if broken:
                    # This row may be the cause: it counts an attempt and waits its own backoff.
                    mark_retry(delivery, batch.claim, broken, now)
                    failed += 1
                    reconnect(broken)
    except (TransientError, *CONNECTION_ERRORS) as error:
        # No connection: nothing left in the batch was sent, and the breaker hears about it. Only a
        # row whose own exchange the server broke off counts an attempt (it may be the cause); a server
        # that cannot be reached at all is nobody's fault, so a long outage, probed again and again,
        # never uses up a row's attempts: nothing is lost however long it lasts.
        reason = str(error) if isinstance(error, TransientError) else f"{type(error).__name__}: {error}"
        for index, delivery in enumerate(remaining):
            mark_retry(delivery, batch.claim, reason, now, counts=index == 0 and in_flight)
        record_failure(EMAIL, reason, now)
        return sent, failed + len(remaining)
    if sent or refused:
        # Any SMTP reply (even a refusal of one recipient) shows the server is up: the breaker closes.
        record_success(EMAIL)
    return sent, failed


def deliver_due(now: datetime | None = None, *, max_batches: int = 100) -> int:
    """Send what is due on every transport; returns how many were sent."""
    from incidents.webhooks import WEBHOOK, send_webhook_batch

    # Email has one breaker (the SMTP server) checked before each batch; webhooks have one per host,
    # checked inside the batch as each row's host comes up.
    return _deliver(EMAIL, send_email_batch, now, max_batches, gated=True) + _deliver(
        WEBHOOK, send_webhook_batch, now, max_batches, gated=False
    )


def _deliver(
    transport: str,
    send: Callable[[Batch, datetime], tuple[int, int]],
    now: datetime | None,
    max_batches: int,
    *,
    gated: bool,
) -> int:
    """Batch after batch while the transport's breaker allows."""
    total = 0
    for _ in range(max_batches):
        now = now or timezone.now()
        allowed = may_send(transport, now) if gated else BATCH_SIZE
        if not allowed:
            break
        batch = claim_batch(now, limit=allowed, transport=transport)
        if batch is None:
            break
        try:
            with Heartbeat(Delivery.objects.all(), batch.claim):
                sent, failed = send(batch, now)
        except Exception:
            # A fault of the sender itself (each row's own failures are handled inside): what the batch
            # still holds goes back on its backoff now, rather than after the claim timeout, and the
            # other transport still sends. Each return counts an attempt, so a batch that keeps failing
            # ends in failed rows, not a loop; if even that fails (the database is gone), it raises.
            log.exception("%s: sending a batch failed; its unsent rows go back to wait", transport)
            for delivery in Delivery.objects.filter(claim=batch.claim, status=DeliveryStatus.SENDING):
                mark_retry(delivery, batch.claim, "sending its batch failed (see the worker's log)", now)
            break
        total += sent
        if failed and not sent:
            break  # leave the rest for the backoff and the breaker to pace
        now = None
    return total


# A batch's claim is renewed this many times per claim timeout, so rows go back to the queue within one
# timeout of their worker dying, and never while it lives.
HEARTBEATS_PER_TIMEOUT = 5
# ... but not for ever: a batch still held after this long is taken for stuck, and its rows go back.
HEARTBEAT_LIMIT_SECONDS = 15 * 60


class Heartbeat:
    """Renews a batch's claim from a thread while the worker sends it, so that the claim timeout can be
    short: however long one email or POST blocks (an SMTP timeout, a slow receiver), a living worker's
    claim stays fresh, and a dead worker's rows are taken back within one timeout and a sweep.

    For any outbox with this module's columns (deliveries, staff notices). Inside a transaction it does
    nothing: the claim is not committed, so nobody else can see, let alone take, the rows.
    """

    def __init__(self, rows: QuerySet[Any], claim: str) -> None:
        self.rows = rows.filter(claim=claim, status=DeliveryStatus.SENDING)
        self.every = settings.DELIVERY_CLAIM_TIMEOUT_SECONDS / HEARTBEATS_PER_TIMEOUT
        self.beats = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        if not connection.in_atomic_block:
            self._thread = threading.Thread(target=self._run, name="claim-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        deadline = time.monotonic() + HEARTBEAT_LIMIT_SECONDS
        try:
            while not self._stop.wait(self.every) and time.monotonic() < deadline:
                try:
                    self.rows.update(claimed_at=timezone.now())
                    self.beats += 1
                except Exception:  # the next beat tries again; the claim has four more beats of slack
                    log.warning("could not renew a claim; trying again in %.0f s", self.every, exc_info=True)
        finally:
            connections.close_all()  # this thread's own connections


def requeue_stale(now: datetime) -> int:
    return take_back_stale(Delivery.objects.all(), now)


def take_back_stale(rows: QuerySet[Any], now: datetime) -> int:
    """Rows held longer than the claim timeout belonged to a worker that died: put them back.

    Each return counts an attempt, so a row that kills every worker that takes it (out of memory, a
    crash in a library) fails after DELIVERY_MAX_ATTEMPTS instead of coming back forever. For any
    outbox with this module's columns and statuses (deliveries, staff notices).
    """
    stale = rows.filter(
        status=DeliveryStatus.SENDING,
        claimed_at__lt=now - timedelta(seconds=settings.DELIVERY_CLAIM_TIMEOUT_SECONDS),
    )
    exhausted = stale.filter(attempts__gte=settings.DELIVERY_MAX_ATTEMPTS - 1).update(
        status=DeliveryStatus.FAILED,
        attempts=F("attempts") + 1,
        claim="",
        last_error="its worker stopped while holding it, too many times",
    )
    return exhausted + stale.update(
        status=DeliveryStatus.PENDING, claim="", attempts=F("attempts") + 1, next_attempt_at=now
    )


def pending_messages() -> Iterable[int]:
    return Message.objects.filter(fanned_out_at__isnull=True).values_list("pk", flat=True)
