"""The `earn-category-multiplier` earn rule, as plain Python.

The specification is `plugins/earn-category-multiplier/README.md` (the Rust plugin): for the
same input this module gives the same awards, byte for byte — points, reason text, order —
and fails with `bad-config` on the same configurations.

This module knows nothing of WebAssembly or of the generated WIT bindings: it takes plain
values and returns plain values, so `python3 -m unittest` can test it on any CPython. `app.py`
adapts the WIT types to it.

Integer arithmetic only. Python's integers do not overflow, so where the Rust plugin works in
`i64`/`i128` and saturates, this module saturates at the same bounds explicitly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Optional

I64_MIN, I64_MAX = -(2**63), 2**63 - 1
I128_MIN, I128_MAX = -(2**127), 2**127 - 1

_MICROS_PER_DAY = 86_400_000_000

# What Rust's `str::trim` strips (Unicode White_Space). Python's `str.strip()` would also strip
# U+001C..U+001F, which Rust does not.
_RUST_WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)

_FIELDS = ("points_per_currency_unit", "category_percent", "member_day",
           "birthday_month_percent")
_MEMBER_DAY_FIELDS = ("weekday", "percent")


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
    birthday_month: Optional[int]  # the member's birthday month, or None when unknown
    total: int
    lines: List[Line]  # or plain (category, total) tuples


@dataclass(frozen=True)
class Award:
    points: int
    reason: str


# --- configuration -------------------------------------------------------------------------
#
# The Rust plugin parses with serde_json into structs with `deny_unknown_fields`. What that
# implies, and what this parser therefore does:
# - blank text (Rust `trim`) reads as `{}`; otherwise the text must be one JSON value;
# - numbers must be JSON integers within i64 (u8 for `weekday`); `2.0`, `1e2` and `-0` (which
#   serde_json reads as a float) are rejected; so are NaN and Infinity;
# - a field not listed, or listed twice, at the top level or in `member_day`, is rejected;
# - in `category_percent` a repeated name keeps its last value, but every value must be an
#   integer; strings with an unpaired surrogate escape (`"\ud800"`) are rejected;
# - `null` means "absent" for `member_day` and `birthday_month_percent` only.
# Type errors are reported first, then the range checks in the Rust plugin's order.


class _Object(list):
    """A JSON object as its list of (key, value) pairs, duplicates kept."""


class _Float(float):
    """A JSON number serde_json reads as a float."""


def _parse_int(text: str):
    # serde_json reads `-0` as the float -0.0; everything else without `.`/`e` is an integer.
    return _Float(-0.0) if text == "-0" else int(text)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _integer(value: object, what: str, lo: int = I64_MIN, hi: int = I64_MAX) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadConfig(f"configuration is invalid: {what} must be an integer")
    if not lo <= value <= hi:
        raise BadConfig(f"configuration is invalid: {what} is out of range")
    return value


def _fields(obj: object, names: tuple, what: str) -> Dict[str, object]:
    if not isinstance(obj, _Object):
        raise BadConfig(f"configuration is invalid: {what} must be a JSON object")
    seen: Dict[str, object] = {}
    for key, value in obj:
        if key not in names:
            raise BadConfig(f"configuration is invalid: unknown field `{key}` in {what}")
        if key in seen:
            raise BadConfig(f"configuration is invalid: duplicate field `{key}` in {what}")
        seen[key] = value
    return seen


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in text)


def parse_config(text: str) -> Config:
    """Parses the plugin's JSON configuration; raises `BadConfig` when it is not valid."""
    if not text.strip(_RUST_WHITESPACE):
        text = "{}"
    try:
        raw = json.loads(text, object_pairs_hook=_Object, parse_int=_parse_int,
                         parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise BadConfig(f"configuration is invalid: {e}") from None
    top = _fields(raw, _FIELDS, "the configuration")

    ppcu = 1
    if "points_per_currency_unit" in top:
        ppcu = _integer(top["points_per_currency_unit"], "points_per_currency_unit")

    categories: Dict[str, int] = {}
    if "category_percent" in top:
        table = top["category_percent"]
        if not isinstance(table, _Object):
            raise BadConfig("configuration is invalid: category_percent must be a JSON object")
        for name, percent in table:
            if _has_surrogate(name):
                raise BadConfig("configuration is invalid: a category name is not Unicode")
            categories[name] = _integer(percent, f"category_percent.{name}")

    member_day = None
    if top.get("member_day") is not None:
        md = _fields(top["member_day"], _MEMBER_DAY_FIELDS, "member_day")
        for name in _MEMBER_DAY_FIELDS:
            if name not in md:
                raise BadConfig(f"configuration is invalid: missing field `{name}` in member_day")
        member_day = MemberDay(_integer(md["weekday"], "member_day.weekday", 0, 255),
                               _integer(md["percent"], "member_day.percent"))

    birthday = None
    if top.get("birthday_month_percent") is not None:
        birthday = _integer(top["birthday_month_percent"], "birthday_month_percent")

    config = Config(ppcu, categories, member_day, birthday)
    _validate(config)
    return config


def _validate(config: Config) -> None:
    # The messages and their order are the Rust plugin's.
    if config.points_per_currency_unit < 0:
        raise BadConfig("points_per_currency_unit must not be negative")
    for name in sorted(config.category_percent):
        if config.category_percent[name] < 0:
            raise BadConfig(f"category_percent.{name} must not be negative")
    if config.member_day is not None:
        if not 1 <= config.member_day.weekday <= 7:
            raise BadConfig("member_day.weekday must be 1 (Monday) to 7 (Sunday)")
        if config.member_day.percent < 0:
            raise BadConfig("member_day.percent must not be negative")
    if config.birthday_month_percent is not None and config.birthday_month_percent < 0:
        raise BadConfig("birthday_month_percent must not be negative")


# --- calendar ------------------------------------------------------------------------------


def local_day(now: int, utc_offset_seconds: int) -> int:
    """Days since 1970-01-01 in the merchant's local time (floor, so before 1970 is negative).
    The local instant saturates at the bounds of i64, as in the Rust SDK."""
    local = min(max(now + utc_offset_seconds * 1_000_000, I64_MIN), I64_MAX)
    return local // _MICROS_PER_DAY


def weekday(day: int) -> int:
    """ISO weekday of a day number: 1 = Monday … 7 = Sunday (1970-01-01 was a Thursday)."""
    return (day + 3) % 7 + 1


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


# --- arithmetic and text -------------------------------------------------------------------


def minor_per_unit(exponent: int) -> int:
    """10^exponent, the exponent capped at 38 (as the Rust SDK does, to stay within i128)."""
    return 10 ** min(exponent, 38)


def mul_div(amount: int, numerator: int, denominator: int) -> int:
    """floor(amount × numerator / denominator) for points: 0 when the product (or the
    denominator) is not positive, and at most 2^63 − 1. A product beyond i128 counts as
    2^63 − 1 when positive, as in the Rust SDK."""
    if denominator <= 0:
        return 0
    product = amount * numerator
    if product > I128_MAX:
        return I64_MAX
    if product <= 0:  # includes a product below i128's range
        return 0
    return min(product // denominator, I64_MAX)


def _extra(amount: int, ppcu: int, percent: int, exp: int) -> int:
    # The points above the base rate that `percent` earns on `amount` minor units.
    return mul_div(amount, ppcu * (percent - 100), 100 * minor_per_unit(exp))


def multiplier(percent: int) -> str:
    """`percent` / 100 without trailing zeros: 200 → "2", 150 → "1.5", 125 → "1.25"."""
    whole, hundredths = divmod(percent, 100)
    if hundredths == 0:
        return f"{whole}"
    if hundredths % 10 == 0:
        return f"{whole}.{hundredths // 10}"
    return f"{whole}.{hundredths:02d}"


# --- the rule ------------------------------------------------------------------------------


def evaluate(inp: Input) -> List[Award]:
    """The awards for one purchase, in order: base, categories (by name), member day, birthday
    month; each only when its points are positive. Raises `BadConfig`."""
    config = parse_config(inp.config)
    rate = config.points_per_currency_unit
    exp = inp.currency_exponent
    awards: List[Award] = []

    def add(points: int, reason: str) -> None:
        if points > 0:
            awards.append(Award(points, reason))

    unit = "point" if rate == 1 else "points"
    add(mul_div(inp.total, rate, minor_per_unit(exp)), f"base: {rate} {unit} per {inp.currency} 1")

    if config.category_percent:
        # Per category, the sum of its lines' totals in line order, saturating in i64.
        spent: Dict[str, int] = {}
        for category, total in inp.lines:
            if category is not None:
                s = spent.get(category, 0) + total
                spent[category] = I64_MAX if s > I64_MAX else I64_MIN if s < I64_MIN else s
        for name in sorted(config.category_percent):
            percent = config.category_percent[name]
            if percent > 100:
                add(_extra(spent.get(name, 0), rate, percent, exp), f"{multiplier(percent)}× {name}")

    day = local_day(inp.now, inp.utc_offset_seconds)
    if config.member_day is not None and weekday(day) == config.member_day.weekday:
        add(_extra(inp.total, rate, config.member_day.percent, exp), "member day")

    if config.birthday_month_percent is not None and inp.birthday_month is not None:
        if civil_from_days(day)[1] == inp.birthday_month:
            add(_extra(inp.total, rate, config.birthday_month_percent, exp), "birthday month")

    return awards
