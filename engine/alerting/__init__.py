"""Alerting: what people are told, when, where, and what they do about it.

Owns alerts from anomaly episodes and incoming alerts (`alerts`), their risk and
context (`risk`, which scores an alert and so lives here, not in detection), the
routing file (`routing`), silences (`silences`), the notification pipeline of stages
(`notify`), the durable outbox and its delivery (`delivery`), send-rate limits
(`throttle`), and what people do from chat, audited (`actions`). It reads what
detection found and imports neither intake, answers nor brief.
"""

from engine.alerting.actions import ActionResult, Actor, AlertActions
from engine.alerting.alerts import Alert, AlertChange, AlertPolicy, decide
from engine.alerting.delivery import ChatNotifier, Deliverer, DeliveryConfig, SentMessage
from engine.alerting.notify import Dispatcher, Leadership, Notification, build_pipeline
from engine.alerting.risk import ChangeRef, assess
from engine.alerting.routing import Destination, Routing, Timing, default_routing, load_routing
from engine.alerting.silences import Silence, make_silence
from engine.alerting.throttle import ChatThrottle, Limits

__all__ = [
    "ActionResult", "Actor", "Alert", "AlertActions", "AlertChange", "AlertPolicy", "ChangeRef",
    "ChatNotifier", "ChatThrottle", "Deliverer", "DeliveryConfig", "Destination", "Dispatcher",
    "Leadership", "Limits", "Notification", "Routing", "SentMessage", "Silence", "Timing", "assess",
    "build_pipeline", "decide", "default_routing", "load_routing", "make_silence",
]  # fmt: skip
