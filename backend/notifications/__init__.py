"""Notifications: events derived from the audit log (events), sent as signed webhooks or through apprise (senders) by a
dispatcher that never runs inside the request that caused them (dispatch); targets, mutes and the delivery log
(targets); the targets' secrets sealed for the database (sealing)."""

from __future__ import annotations

from backend.notifications.dispatch import Dispatcher, Notifier, PassResult, Policy
from backend.notifications.events import KINDS
from backend.notifications.sealing import Sealer
from backend.notifications.senders import signature, verify
from backend.notifications.targets import AddedTarget, DeliveryView, Targets, TargetView
from backend.settings import Settings
from backend.store import Store

__all__ = [
    "KINDS",
    "AddedTarget",
    "DeliveryView",
    "Dispatcher",
    "Notifications",
    "Notifier",
    "PassResult",
    "Policy",
    "Sealer",
    "TargetView",
    "Targets",
    "signature",
    "verify",
]


class Notifications:
    """What the workspace hands out: the targets' verbs and the dispatcher, over one sealer."""

    def __init__(self, store: Store, settings: Settings, policy: Policy | None = None) -> None:
        sealer = Sealer(settings)
        self.targets = Targets(store, sealer)
        self.dispatcher = Dispatcher(store, sealer, policy)

    def start_notifier(self, interval: float = 1.0) -> Notifier:
        return Notifier(self.dispatcher, interval).start()
