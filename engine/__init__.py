"""The domain, one package per capability, free of storage and front ends.

    intake/     signals in: ingest, webhooks and pull sources, the stream worker, shard ownership
    detection/  the detector ensemble, anomaly episodes (hysteresis, flapping), forecasts, replay
    alerting/   alerts, risk, routing, silences, the notify pipeline, delivery, throttling, actions
    answers/    question parsing, retrieval, computed figures, narration, the built-in embedder
    brief/      the morning brief's content and schedule

Shared by all of them, at this level: the signal model (`signal`), the storage ports
(`ports`), errors, text formatting, failpoints, supervision of background loops,
charts and the demo world. Capabilities import each other in one direction only:
detection ← alerting ← intake, and detection, alerting ← answers ← brief
(tests/engine/test_layers.py enforces it).
"""
