"""The `earn-category-multiplier` earn rule, as plain Python.

This module knows nothing of WebAssembly or of the generated WIT bindings: it takes plain
values and returns plain values, so `python3 -m unittest` can test it on any CPython. `app.py`
adapts the WIT types to it.

Integer arithmetic only: money is an integer count of minor units, percentages are integers,
every division is a floor division of non-negative integers (a negative intermediate can only
come from a negative purchase total, and then the award is not positive and is dropped).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Optional

# Awards and purchase totals are `s64` in the WIT.
S64_MAX = 2**63 - 1

# 1970-01-01 was a Thursday; with Monday = 1 that is weekday 4.
_EPOCH_WEEKDAY = 4
_MICROS_PER_DAY = 86_400_000_000


class BadConfig(Exception):
    """The configuration is not what the rule understands (code `bad-config`)."""


@dataclass(frozen=True)
class MemberDay:
    weekday: int  # 1 = Monday … 7 = Sunday
    percent: int


@dataclass(frozen=True)
class Config:
    points_per_currency_unit: int = 1
    category_percent: Dict[str, int] = field(default_factory=dict)
    member_day: Optional[MemberDay] = None
    birthday_month_percent: Optional[int] = None


class Line(NamedTuple):
    # A tuple, not a dataclass: a purchase can have many lines, and in the component every
    # Python-level step costs fuel.
    category: Optional[str]
    total: int


@dataclass(frozen=True)
class Input:
    """What the rule reads of the WIT's `context`, `member` and `purchase`."""

    config: str
    now: int  # µs since the epoch, UTC
    utc_offset_seconds: int
    currency: str
    currency_exponent: int
    birthday_month: Optional[int]  # 1..12, or None when the birthday is unknown
    total: int
    lines: List[Line]  # or plain (category, total) tuples


@dataclass(frozen=True)
class Award:
    points: int
    reason: str


def _is_int(value: object) -> bool:
    # JSON `true` parses as a Python bool, which is an int subclass; it is not a number here.
    return isinstance(value, int) and not isinstance(value, bool)


def _non_negative_int(value: object, what: str) -> int:
    if not _is_int(value):
        raise BadConfig(f"{what} must be an integer")
    if value < 0:
        raise BadConfig(f"{what} must not be negative")
    return value


def _percent(value: object, what: str) -> int:
    value = _non_negative_int(value, what)
    if value < 100:
        raise BadConfig(f"{what} must be at least 100")
    return value


def parse_config(text: str) -> Config:
    """Parses the plugin's JSON configuration; raises `BadConfig` when it is not valid."""
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise BadConfig(f"config is not JSON: {e}") from None
    if not isinstance(raw, dict):
        raise BadConfig("config must be a JSON object")

    ppcu = 1
    if "points_per_currency_unit" in raw:
        ppcu = _non_negative_int(raw["points_per_currency_unit"], "points_per_currency_unit")

    categories: Dict[str, int] = {}
    if "category_percent" in raw:
        table = raw["category_percent"]
        if not isinstance(table, dict):
            raise BadConfig("category_percent must be an object")
        for name, percent in table.items():
            categories[name] = _percent(percent, f"category_percent.{name}")

    member_day = None
    if "member_day" in raw and raw["member_day"] is not None:
        md = raw["member_day"]
        if not isinstance(md, dict):
            raise BadConfig("member_day must be an object")
        if "weekday" not in md:
            raise BadConfig("member_day.weekday is missing")
        if "percent" not in md:
            raise BadConfig("member_day.percent is missing")
        weekday = _non_negative_int(md["weekday"], "member_day.weekday")
        if not 1 <= weekday <= 7:
            raise BadConfig("member_day.weekday must be 1 (Monday) to 7 (Sunday)")
        member_day = MemberDay(weekday, _percent(md["percent"], "member_day.percent"))

    birthday = None
    if "birthday_month_percent" in raw and raw["birthday_month_percent"] is not None:
        birthday = _percent(raw["birthday_month_percent"], "birthday_month_percent")

    return Config(ppcu, categories, member_day, birthday)


def local_day(now: int, utc_offset_seconds: int) -> int:
    """Days since 1970-01-01 in the merchant's local time (floor, so before 1970 is negative)."""
    return (now + utc_offset_seconds * 1_000_000) // _MICROS_PER_DAY


def weekday(day: int) -> int:
    """ISO weekday of a day number: 1 = Monday … 7 = Sunday."""
    return (day + _EPOCH_WEEKDAY - 1) % 7 + 1


def civil_from_days(day: int) -> tuple:
    """(year, month, day) of a day number (Howard Hinnant's algorithm, proleptic Gregorian)."""
    z = day + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (y + (1 if m <= 2 else 0), m, d)


def multiplier(percent: int) -> str:
    """`percent` / 100 without trailing zeros: 200 → "2", 150 → "1.5", 125 → "1.25"."""
    whole, frac = divmod(percent, 100)
    if frac == 0:
        return str(whole)
    return f"{whole}.{frac:02d}".rstrip("0")


def _extra(amount: int, ppcu: int, percent: int, exp: int) -> int:
    # The points above the base rate that `percent` earns on `amount` minor units.
    return amount * ppcu * (percent - 100) // (100 * 10**exp)


def evaluate(inp: Input) -> List[Award]:
    """The awards for one purchase, in order: base, categories (by name), member day, birthday
    month; each only when its points are positive. Raises `BadConfig`."""
    config = parse_config(inp.config)
    ppcu = config.points_per_currency_unit
    exp = inp.currency_exponent
    awards: List[Award] = []

    def add(points: int, reason: str) -> None:
        if points > 0:
            awards.append(Award(min(points, S64_MAX), reason))

    add(inp.total * ppcu // 10**exp, f"base: {ppcu} point(s) per {inp.currency} 1")

    if config.category_percent:
        spent: Dict[str, int] = {}
        for category, total in inp.lines:
            if category is not None:
                spent[category] = spent.get(category, 0) + total
        for name in sorted(config.category_percent):
            percent = config.category_percent[name]
            if percent > 100:
                add(_extra(spent.get(name, 0), ppcu, percent, exp), f"{multiplier(percent)}× {name}")

    day = local_day(inp.now, inp.utc_offset_seconds)
    if config.member_day is not None and weekday(day) == config.member_day.weekday:
        add(_extra(inp.total, ppcu, config.member_day.percent, exp), "member day")

    if config.birthday_month_percent is not None and inp.birthday_month is not None:
        if civil_from_days(day)[1] == inp.birthday_month:
            add(_extra(inp.total, ppcu, config.birthday_month_percent, exp), "birthday month")

    return awards
