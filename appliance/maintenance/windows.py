"""The weekly schedule of ``[maintenance]``: windows such as ``"Mon-Fri 22:00-06:00"`` in whole hours.

A window that ends at or before its start runs past midnight into the next day ("Mon 22:00-06:00" is Monday
22:00 to Tuesday 06:00); "Mon-Fri" repeats it for each day. The schedule is the set of hours of the week
(Monday 00:00 = 0 ... Sunday 23:00 = 167) in which tasks of a kind are collected.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from appliance.config import check_window

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
HOURS_PER_WEEK = 7 * 24


def hours_of(windows: Iterable[str]) -> frozenset[int]:
    """The hours of the week covered by some windows.

    Raises
    ------
    ConfigError
        For a window that is not of the form "Mon-Fri 22:00-06:00".
    """
    hours: set[int] = set()
    for text in windows:
        match = check_window(text, "[maintenance]")
        first = DAYS.index(match.group(1))
        last = DAYS.index(match.group(2) or match.group(1))
        start, end = int(match.group(3)), int(match.group(4))
        length = end - start if end > start else end + 24 - start
        day = first
        while True:
            for h in range(length):
                hours.add((day * 24 + start + h) % HOURS_PER_WEEK)
            if day == last:
                break
            day = (day + 1) % 7
    return frozenset(hours)


def hour_of_week(when: datetime) -> int:
    """0 for Monday 00:00-00:59 ... 167 for Sunday 23:00-23:59 (local time of ``when``)."""
    return when.weekday() * 24 + when.hour


class Schedule:
    """The windows of one task kind."""

    def __init__(self, windows: Iterable[str]) -> None:
        self.windows = tuple(windows)
        self.hours = hours_of(self.windows)

    def is_open(self, when: datetime) -> bool:
        """Whether ``when`` falls in a window."""
        return hour_of_week(when) in self.hours

    def opened_at(self, when: datetime) -> datetime | None:
        """Start (on the hour) of the window ``when`` is in; None when it is in none."""
        if not self.is_open(when):
            return None
        start = when.replace(minute=0, second=0, microsecond=0)
        for _ in range(HOURS_PER_WEEK):
            before = start - timedelta(hours=1)
            if hour_of_week(before) not in self.hours:
                return start
            start = before
        return start  # open all week: the window "opened" a week ago

    def next_open(self, when: datetime) -> datetime | None:
        """The next time (on the hour, or ``when`` itself) a window is open; None when there are none."""
        if self.is_open(when):
            return when
        start = when.replace(minute=0, second=0, microsecond=0)
        for _ in range(HOURS_PER_WEEK):
            start += timedelta(hours=1)
            if self.is_open(start):
                return start
        return None

    def grid(self) -> list[list[bool]]:
        """7 rows (Mon..Sun) of 24 hours: True where the schedule is open."""
        return [[d * 24 + h in self.hours for h in range(24)] for d in range(7)]
