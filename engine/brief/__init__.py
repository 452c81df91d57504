"""Brief: the morning summary of what happened, and when it goes out.

Owns its content (`content`: still open, fired, resolved, flapping, silences, top
anomalies, changes, trends to their limit, the narrated version) and its schedule per
destination (`schedule`: cron time in a zone, one per slot across processes). It reads
what alerting and detection recorded and may narrate through answers.
"""

from engine.brief.content import Brief, brief_lines, build_brief
from engine.brief.schedule import BriefSchedule, BriefScheduler, parse_schedule

__all__ = ["Brief", "BriefSchedule", "BriefScheduler", "brief_lines", "build_brief", "parse_schedule"]
