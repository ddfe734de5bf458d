"""Tests of the rule logic (`src/rules.py`), without WebAssembly or the generated bindings.

    python3 -m unittest discover -s examples/python-earn-rule/tests
"""

import json
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import rules  # noqa: E402
from rules import Award, BadConfig, Line  # noqa: E402

DAY = 86_400_000_000
# 2024-05-06 00:00:00 UTC, a Monday.
MONDAY_2024_05_06 = 19_849 * DAY


def inp(config=None, *, now=MONDAY_2024_05_06 + 12 * 3600 * 1_000_000, offset=0,
        currency="CNY", exp=2, birthday_month=None, total=None, lines=()):
    lines = [Line(c, t) for c, t in lines]
    if total is None:
        total = sum(l.total for l in lines)
    text = config if isinstance(config, str) else json.dumps(config or {})
    return rules.Input(text, now, offset, currency, exp, birthday_month, total, lines)


class Calendar(unittest.TestCase):
    def test_epoch_is_a_thursday(self):
        self.assertEqual(rules.weekday(0), 4)
        self.assertEqual(rules.weekday(-1), 3)  # 1969-12-31, a Wednesday
        self.assertEqual(rules.weekday(19_849), 1)  # 2024-05-06, a Monday
        self.assertEqual(rules.weekday(19_855), 7)  # 2024-05-12, a Sunday

    def test_civil_from_days(self):
        self.assertEqual(rules.civil_from_days(0), (1970, 1, 1))
        self.assertEqual(rules.civil_from_days(-1), (1969, 12, 31))
        self.assertEqual(rules.civil_from_days(19_849), (2024, 5, 6))
        self.assertEqual(rules.civil_from_days(19_782), (2024, 2, 29))
        self.assertEqual(rules.civil_from_days(11_016), (2000, 2, 29))

    def test_local_day_uses_the_offset(self):
        # 2024-05-05 20:00 UTC is already Monday 04:00 in Shanghai (+08:00).
        now = MONDAY_2024_05_06 - 4 * 3600 * 1_000_000
        self.assertEqual(rules.local_day(now, 0), 19_848)
        self.assertEqual(rules.local_day(now, 8 * 3600), 19_849)
        # And 00:30 UTC on Monday is still Sunday in New York (-05:00 / -04:00).
        self.assertEqual(rules.local_day(MONDAY_2024_05_06 + 1_800_000_000, -4 * 3600), 19_848)

    def test_local_day_before_1970_floors(self):
        self.assertEqual(rules.local_day(-1, 0), -1)


class Multiplier(unittest.TestCase):
    def test_no_trailing_zeros(self):
        self.assertEqual(rules.multiplier(200), "2")
        self.assertEqual(rules.multiplier(150), "1.5")
        self.assertEqual(rules.multiplier(125), "1.25")
        self.assertEqual(rules.multiplier(105), "1.05")
        self.assertEqual(rules.multiplier(1000), "10")
        self.assertEqual(rules.multiplier(333), "3.33")
        self.assertEqual(rules.multiplier(101), "1.01")


class Base(unittest.TestCase):
    def test_default_is_one_point_per_unit(self):
        self.assertEqual(
            rules.evaluate(inp(total=12_345)),
            [Award(123, "base: 1 point(s) per CNY 1")],
        )

    def test_points_per_unit_and_exponent_zero(self):
        self.assertEqual(
            rules.evaluate(inp({"points_per_currency_unit": 3}, currency="JPY", exp=0, total=500)),
            [Award(1500, "base: 3 point(s) per JPY 1")],
        )

    def test_nothing_below_one_unit(self):
        self.assertEqual(rules.evaluate(inp(total=99)), [])

    def test_zero_rate_awards_nothing(self):
        config = {"points_per_currency_unit": 0, "category_percent": {"coffee": 300}}
        self.assertEqual(rules.evaluate(inp(config, lines=[("coffee", 10_000)])), [])

    def test_negative_total_awards_nothing(self):
        config = {"member_day": {"weekday": 1, "percent": 200}, "birthday_month_percent": 200}
        self.assertEqual(
            rules.evaluate(inp(config, birthday_month=5, lines=[("coffee", -5_000)])), []
        )


class Categories(unittest.TestCase):
    def test_categories_in_name_order_after_base(self):
        config = {"category_percent": {"tea": 150, "coffee": 200, "cake": 100}}
        lines = [("coffee", 3_000), ("tea", 1_000), ("coffee", 1_550), ("cake", 2_000), (None, 500)]
        self.assertEqual(
            rules.evaluate(inp(config, lines=lines)),
            [
                Award(80, "base: 1 point(s) per CNY 1"),
                Award(45, "2× coffee"),  # 45.50 × 1 × 100 % → 45
                Award(5, "1.5× tea"),  # 10.00 × 50 % → 5
            ],
        )

    def test_floor_per_category_sum_not_per_line(self):
        config = {"category_percent": {"coffee": 150}}
        lines = [("coffee", 300), ("coffee", 300)]  # 3.00 each: 1.5 + 1.5 = 3 on the sum
        self.assertEqual(rules.evaluate(inp(config, lines=lines))[1:], [Award(3, "1.5× coffee")])

    def test_category_match_is_exact(self):
        config = {"category_percent": {"coffee": 200}}
        lines = [("Coffee", 10_000), ("coffee ", 10_000)]
        self.assertEqual(len(rules.evaluate(inp(config, lines=lines))), 1)

    def test_names_sort_by_code_point(self):
        config = {"category_percent": {"茶": 200, "Zz": 200, "aa": 200}}
        lines = [("茶", 100), ("Zz", 100), ("aa", 100)]
        reasons = [a.reason for a in rules.evaluate(inp(config, lines=lines))[1:]]
        self.assertEqual(reasons, ["2× Zz", "2× aa", "2× 茶"])

    def test_a_category_too_small_is_dropped(self):
        config = {"category_percent": {"coffee": 101}}
        lines = [("coffee", 9_999)]  # 99.99 × 1 % = 0.9999 → 0
        self.assertEqual(rules.evaluate(inp(config, lines=lines)), [Award(99, "base: 1 point(s) per CNY 1")])


class MemberDayAndBirthday(unittest.TestCase):
    CONFIG = {"points_per_currency_unit": 2,
              "member_day": {"weekday": 1, "percent": 300},
              "birthday_month_percent": 150}

    def test_member_day_and_birthday_month(self):
        self.assertEqual(
            rules.evaluate(inp(self.CONFIG, birthday_month=5, total=1_001)),
            [
                Award(20, "base: 2 point(s) per CNY 1"),  # 10.01 × 2
                Award(40, "member day"),  # 10.01 × 2 × 200 % = 40.04
                Award(10, "birthday month"),  # 10.01 × 2 × 50 % = 10.01
            ],
        )

    def test_other_weekday_and_month(self):
        tuesday = MONDAY_2024_05_06 + DAY
        self.assertEqual(
            rules.evaluate(inp(self.CONFIG, now=tuesday, birthday_month=6, total=1_000)),
            [Award(20, "base: 2 point(s) per CNY 1")],
        )

    def test_no_birthday(self):
        awards = rules.evaluate(inp(self.CONFIG, birthday_month=None, total=1_000))
        self.assertEqual([a.reason for a in awards], ["base: 2 point(s) per CNY 1", "member day"])

    def test_local_time_decides(self):
        # Sunday 2024-05-05 20:00 UTC is Monday in Shanghai and still Sunday in UTC.
        sunday_evening = MONDAY_2024_05_06 - 4 * 3600 * 1_000_000
        utc = rules.evaluate(inp(self.CONFIG, now=sunday_evening, offset=0, total=1_000))
        sh = rules.evaluate(inp(self.CONFIG, now=sunday_evening, offset=8 * 3600, total=1_000))
        self.assertNotIn("member day", [a.reason for a in utc])
        self.assertIn("member day", [a.reason for a in sh])

    def test_month_boundary_in_local_time(self):
        # 2024-04-30 20:00 UTC is May 1st in Shanghai.
        now = 19_843 * DAY + 20 * 3600 * 1_000_000
        config = {"birthday_month_percent": 200}
        self.assertEqual(len(rules.evaluate(inp(config, now=now, birthday_month=5, total=1_000))), 1)
        self.assertEqual(
            rules.evaluate(inp(config, now=now, offset=8 * 3600, birthday_month=5, total=1_000))[1],
            Award(10, "birthday month"),
        )

    def test_percent_100_awards_nothing_extra(self):
        config = {"member_day": {"weekday": 1, "percent": 100}, "birthday_month_percent": 100}
        self.assertEqual(len(rules.evaluate(inp(config, birthday_month=5, total=1_000))), 1)


class Config(unittest.TestCase):
    def test_defaults(self):
        self.assertEqual(rules.parse_config("{}"), rules.Config())

    def bad(self, text):
        with self.assertRaises(BadConfig):
            rules.evaluate(inp(text, total=1_000))

    def test_bad_configs(self):
        for text in [
            "",
            "not json",
            "[]",
            "null",
            "1",
            '{"points_per_currency_unit": -1}',
            '{"points_per_currency_unit": 1.5}',
            '{"points_per_currency_unit": 1.0}',
            '{"points_per_currency_unit": "1"}',
            '{"points_per_currency_unit": true}',
            '{"points_per_currency_unit": null}',
            '{"category_percent": []}',
            '{"category_percent": {"coffee": 99}}',
            '{"category_percent": {"coffee": -200}}',
            '{"category_percent": {"coffee": "200"}}',
            '{"member_day": {"weekday": 0, "percent": 200}}',
            '{"member_day": {"weekday": 8, "percent": 200}}',
            '{"member_day": {"weekday": 1, "percent": 50}}',
            '{"member_day": {"weekday": 1}}',
            '{"member_day": {"percent": 200}}',
            '{"member_day": 1}',
            '{"birthday_month_percent": 99}',
            '{"birthday_month_percent": "200"}',
        ]:
            with self.subTest(text=text):
                self.bad(text)

    def test_unknown_keys_are_ignored(self):
        self.assertEqual(len(rules.evaluate(inp('{"later": 1}', total=1_000))), 1)

    def test_big_numbers_stay_exact_and_saturate_at_s64_max(self):
        config = {"points_per_currency_unit": 10**6, "category_percent": {"gold": 10**6}}
        lines = [("gold", 10**12)]
        awards = rules.evaluate(inp(config, lines=lines))
        self.assertEqual(awards[0].points, 10**16)
        self.assertEqual(awards[1].points, rules.S64_MAX)  # 10**16 × 9999 does not fit


if __name__ == "__main__":
    unittest.main()
