"""The dispatcher: audit events past its cursor become deliveries (one per event and target, never two), and due
deliveries are sent, retried with exponential back-off, then marked delivered or failed.

It runs beside the request that caused an event, never inside it: the request only wrote its audit row. Several
dispatchers (two app replicas, the CLI) may run at once: the cursor moves only from the value a dispatcher read, a
(target, event) pair is unique, and a delivery is claimed by moving its attempt count before it is sent. A dispatcher
that dies while sending leaves the delivery due again after LEASE: at-least-once, with the delivery id in every
attempt so a receiver can drop what it has seen.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.errors import LfopsError
from backend.notifications.events import KINDS, kind_of, payload
from backend.notifications.sealing import Sealer
from backend.notifications.senders import Outcome, send_apprise, send_webhook
from backend.store import Store
from backend.store.models import AuditEvent, NotifyCursor, NotifyDelivery, NotifyMute, NotifyTarget, utcnow

log = logging.getLogger(__name__)

EVENTS_PER_PASS = 500
DUE_PER_PASS = 50
# Events this much older than the newest read are settled: a transaction that took its audit id earlier and commits
# later (PostgreSQL hands ids out before commit) is still read on the next pass; deliveries being unique, twice is once.
SETTLE = timedelta(seconds=30)
# A claimed delivery whose dispatcher died is due again after this.
LEASE = timedelta(seconds=60)


@dataclass(frozen=True)
class Policy:
    """How hard a target is tried: attempts in all, the first back-off (doubling), the per-attempt timeout."""

    max_attempts: int = 5
    backoff_s: float = 10.0
    timeout_s: float = 10.0


@dataclass
class PassResult:
    created: int = 0
    delivered: int = 0
    retried: int = 0
    failed: int = 0


class Dispatcher:
    def __init__(self, store: Store, sealer: Sealer, policy: Policy | None = None) -> None:
        self.store = store
        self.sealer = sealer
        self.policy = policy or Policy()

    def run_once(self) -> PassResult:
        result = PassResult(created=self.collect())
        for outcome in self.send_due():
            if outcome == "delivered":
                result.delivered += 1
            elif outcome == "failed":
                result.failed += 1
            else:
                result.retried += 1
        return result

    # ---- audit events -> deliveries -------------------------------------------------------------------------------

    def collect(self) -> int:
        """Deliveries for the audit events past the cursor; returns how many were created."""
        with self.store.session() as s:
            cursor = s.get(NotifyCursor, 1)
            start = cursor.last_event_id if cursor else 0
            settled = start
            # re-read the unsettled window behind the cursor (see SETTLE); ids below `start` were settled before
            events = list(
                s.scalars(
                    select(AuditEvent).where(AuditEvent.id > start).order_by(AuditEvent.id).limit(EVENTS_PER_PASS)
                )
            )
            if not events:
                return 0
            newest_at = _aware(events[-1].at)
            for event in events:
                if _aware(event.at) <= newest_at - SETTLE or len(events) == EVENTS_PER_PASS:
                    settled = event.id
            targets = list(s.scalars(select(NotifyTarget).where(NotifyTarget.removed_at.is_(None))))
            mutes = {(m.user_id, m.kind) for m in s.scalars(select(NotifyMute))}
            created = 0
            for event in events:
                kind = kind_of(event.action)
                if kind is None:
                    continue
                for target in targets:
                    if event.id <= target.since_event_id or (target.kinds and kind not in target.kinds):
                        continue
                    # a muted pair is recorded too, so re-reading the window after an unmute does not send it
                    muted = target.user_id is not None and (target.user_id, kind) in mutes
                    created += _insert_once(s, target.id, event, kind, muted)
            if settled != start:
                moved = s.execute(
                    update(NotifyCursor)
                    .where(NotifyCursor.id == 1, NotifyCursor.last_event_id == start)
                    .values(last_event_id=settled)
                ).rowcount
                if not moved:  # another dispatcher moved it meanwhile: it made these deliveries too
                    s.rollback()
                    return 0
            return created

    # ---- deliveries -> targets ------------------------------------------------------------------------------------

    def send_due(self) -> list[str]:
        """Send what is due (a few targets at once, so one slow target does not hold the others up)."""
        with self.store.session() as s:
            due = list(
                s.execute(
                    select(NotifyDelivery.id, NotifyDelivery.attempts)
                    .where(NotifyDelivery.status == "pending", NotifyDelivery.next_attempt_at <= utcnow())
                    .order_by(NotifyDelivery.next_attempt_at, NotifyDelivery.id)
                    .limit(DUE_PER_PASS)
                ).all()
            )
        if not due:
            return []
        with ThreadPoolExecutor(max_workers=min(4, len(due)), thread_name_prefix="lfops-notify") as pool:
            return [o for o in pool.map(lambda d: self._attempt(*d), due) if o]

    def _attempt(self, delivery_id: int, attempts: int) -> str:
        with self.store.session() as s:  # claim it: only the dispatcher that moves the count sends
            claimed = s.execute(
                update(NotifyDelivery)
                .where(
                    NotifyDelivery.id == delivery_id,
                    NotifyDelivery.status == "pending",
                    NotifyDelivery.attempts == attempts,
                )
                .values(attempts=attempts + 1, next_attempt_at=utcnow() + LEASE)
            ).rowcount
            if not claimed:
                return ""
            delivery = s.get(NotifyDelivery, delivery_id)
            target = s.get(NotifyTarget, delivery.target_id)
            event = s.get(AuditEvent, delivery.event_id)
            body = payload(event, delivery.kind, delivery.id)
            kind, url, sealed, name = target.kind, target.url, target.secret_sealed, target.name
        outcome = self._send(kind, url, sealed, name, body)
        attempt = attempts + 1
        with self.store.session() as s:
            values: dict = {"last_status": outcome.status, "last_error": outcome.error}
            if outcome.ok:
                values |= {"status": "delivered", "finished_at": utcnow()}
                state = "delivered"
            elif attempt >= self.policy.max_attempts:
                values |= {"status": "failed", "finished_at": utcnow()}
                state = "failed"
                log.warning(
                    "notification %s to %s failed after %s attempts: %s", delivery_id, name, attempt, outcome.error
                )
            else:
                backoff = self.policy.backoff_s * 2 ** (attempt - 1)
                values["next_attempt_at"] = utcnow() + timedelta(seconds=backoff)
                state = "retry"
            s.execute(update(NotifyDelivery).where(NotifyDelivery.id == delivery_id).values(**values))
        return state

    def _send(self, kind: str, url: str, sealed: str, name: str, body: dict) -> Outcome:
        try:
            secret = self.sealer.open(sealed, f"target {name}")
        except LfopsError as exc:
            return Outcome(False, None, str(exc))
        if kind == "webhook":
            return send_webhook(url, secret, body, self.policy.timeout_s)
        return send_apprise(secret, f"lfops: {KINDS[body['kind']]}", body["summary"])


class Notifier:
    """The dispatcher in a background thread, a pass every `interval` seconds (the app starts one)."""

    def __init__(self, dispatcher: Dispatcher, interval: float = 1.0) -> None:
        self.dispatcher = dispatcher
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lfops-notifier", daemon=True)

    def start(self) -> Notifier:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.dispatcher.run_once()
            except Exception:  # noqa: BLE001 - a bad pass (database away) must not end notifications for good
                log.exception("notification pass failed; trying again")
            self._stop.wait(self.interval)


def _insert_once(s: Session, target_id: int, event: AuditEvent, kind: str, muted: bool) -> int:
    """One delivery for (target, event): 0 when it exists (this window was read before, or by another dispatcher)."""
    exists = s.scalar(
        select(NotifyDelivery.id).where(NotifyDelivery.target_id == target_id, NotifyDelivery.event_id == event.id)
    )
    if exists is not None:
        return 0
    try:
        with s.begin_nested():  # a unique violation (a dispatcher racing us) undoes only this row
            delivery = NotifyDelivery(target_id=target_id, event_id=event.id, kind=kind, subject=event.subject[:255])
            if muted:
                delivery.status, delivery.finished_at = "muted", utcnow()
            s.add(delivery)
            s.flush()
    except IntegrityError:  # the other dispatcher's row stands
        return 0
    return 0 if muted else 1


def _aware(value):  # noqa: ANN001, ANN202 - SQLite hands back naive UTC datetimes
    from datetime import UTC

    return value if value.tzinfo else value.replace(tzinfo=UTC)
