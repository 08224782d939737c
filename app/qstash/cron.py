"""Cron expressions as QStash accepts them: five fields, optional ``CRON_TZ=Zone`` prefix.

Parsing and iteration are cronsim's; this module only splits off the time zone, so that an
expression is validated where it is declared rather than rejected later by QStash.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from app.qstash.errors import InvalidCron


@dataclass(frozen=True, slots=True)
class CronExpression:
    """A validated cron expression and the time zone it is evaluated in."""

    text: str
    fields: str
    zone: ZoneInfo

    def next_runs(self, count: int, *, after: datetime | None = None) -> list[datetime]:
        """Return the next ``count`` firing times after ``after`` (default: now), aware."""
        start = (after or datetime.now(UTC)).astimezone(self.zone)
        iterator = CronSim(self.fields, start)
        return [next(iterator) for _ in range(count)]


def parse_cron(text: str) -> CronExpression:
    """Validate a QStash cron expression; raise ``InvalidCron`` saying what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidCron(f"cron expression must be a non-empty string, not {text!r}")
    fields = text.strip()
    zone = ZoneInfo("UTC")
    if fields.startswith("CRON_TZ="):
        zone_name, _, fields = fields[len("CRON_TZ=") :].partition(" ")
        try:
            zone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidCron(f"unknown time zone {zone_name!r} in {text!r}") from None
        fields = fields.strip()
    if len(fields.split()) != 5:
        raise InvalidCron(
            f"cron expression {text!r} must have 5 fields (minute hour day month weekday)"
        )
    try:
        CronSim(fields, datetime.now(UTC).astimezone(zone))
    except CronSimError as exc:
        raise InvalidCron(f"invalid cron expression {text!r}: {exc}") from None
    return CronExpression(text=text.strip(), fields=fields, zone=zone)
