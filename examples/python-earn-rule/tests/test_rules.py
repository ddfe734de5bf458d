"""Tests of the rule logic (`src/rules.py`), without WebAssembly or the generated bindings.

    python3 -m unittest discover -s examples/python-earn-rule/tests

`RustPluginCases` repeats the Rust plugin's own tests (plugins/earn-category-multiplier) with
the same inputs and expected awards; the other classes pin the edge cases its README fixes.
"""

import calendar
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import rules  # noqa: E402
from rules import I64_MAX, Award, BadConfig, Line  # noqa: E402

DAY = 86_400_000_000
HOUR = 3_600_000_000
# The Rust SDK's testing::DEFAULT_NOW: Monday 2024-01-15 12:00:00 UTC.
DEFAULT_NOW = 1_705_320_000_000_000


def utc(year, month, day, hour=0, minute=0, second=0):
    return calendar.timegm((year, month, day, hour, minute, second)) * 1_000_000


def inp(config=None, *, now=DEFAULT_NOW, offset=0, currency="CNY", exp=2, birthday_month=None,
        total=None, lines=()):
    lines = [Line(c, t) for c, t in lines]
    if total is None:
        total = sum(line.total for line in lines)
    text = config if isinstance(config, str) else json.dumps(config or {})
    return rules.Input(text, now, offset, currency, exp, birthday_month, total, lines)


# The Rust tests' purchase: latte 2 × 15.50 coffee, tea 12.75, bagel 9.99 food, gift 5.00
# without a category; total 58.74.
LINES = [("coffee", 3_100), ("tea", 1_275), ("food", 999), (None, 500)]


def reasons(awards):
    return [f"{a.points} {a.reason}" for a in awards]


class RustPluginCases(unittest.TestCase):
    def test_base_only_by_default(self):
        self.assertEqual(rules.evaluate(inp(lines=LINES)), [Award(58, "base: 1 point per CNY 1")])

    def test_categories_in_name_order_and_multiplier_text(self):
        config = {"points_per_currency_unit": 2,
                  "category_percent": {"tea": 150, "coffee": 200, "food": 100, "gift": 300,
                                       "none": 500}}
        self.assertEqual(
            rules.evaluate(inp(config, lines=LINES)),
            [Award(117, "base: 2 points per CNY 1"), Award(62, "2× coffee"),
             Award(12, "1.5× tea")],
        )

    def test_member_day_uses_the_merchant_local_weekday(self):
        # 2024-01-14T20:00:00Z: Sunday (7) in UTC, Monday (1) in Shanghai.
        config = {"member_day": {"weekday": 1, "percent": 300}}
        now = utc(2024, 1, 14, 20)
        self.assertEqual(
            rules.evaluate(inp(config, now=now, offset=8 * 3600, lines=LINES)),
            [Award(58, "base: 1 point per CNY 1"), Award(117, "member day")],
        )
        self.assertEqual(rules.evaluate(inp(config, now=now, offset=0, lines=LINES)),
                         [Award(58, "base: 1 point per CNY 1")])

    def test_birthday_month_needs_a_birthday_in_the_local_month(self):
        config = {"birthday_month_percent": 200}
        now = utc(2024, 5, 31, 18)  # 1 June in Shanghai
        self.assertEqual(
            rules.evaluate(inp(config, now=now, birthday_month=5, lines=LINES)),
            [Award(58, "base: 1 point per CNY 1"), Award(58, "birthday month")],
        )
        self.assertEqual(
            rules.evaluate(inp(config, now=now, offset=8 * 3600, birthday_month=5, lines=LINES)),
            [Award(58, "base: 1 point per CNY 1")],
        )
        self.assertEqual(rules.evaluate(inp(config, now=now, lines=LINES)),
                         [Award(58, "base: 1 point per CNY 1")])

    def test_all_awards_in_order(self):
        config = {"category_percent": {"coffee": 200},
                  "member_day": {"weekday": 1, "percent": 200},
                  "birthday_month_percent": 150}
        self.assertEqual(
            reasons(rules.evaluate(inp(config, birthday_month=1, lines=LINES))),
            ["58 base: 1 point per CNY 1", "31 2× coffee", "58 member day", "29 birthday month"],
        )

    def test_zero_point_awards_are_left_out(self):
        config = {"points_per_currency_unit": 0, "category_percent": {"coffee": 200}}
        self.assertEqual(rules.evaluate(inp(config, lines=LINES)), [])
        config = {"category_percent": {"coffee": 200}}
        self.assertEqual(rules.evaluate(inp(config, lines=[("coffee", 99)])), [])

    def test_bad_config(self):
        for config in [
            '{"points_per_currency_unit": -1}',
            '{"category_percent": {"coffee": -5}}',
            '{"category_percent": {"coffee": "200"}}',
            '{"member_day": {"weekday": 0, "percent": 200}}',
            '{"member_day": {"weekday": 8, "percent": 200}}',
            '{"member_day": {"weekday": 1}}',
            '{"birthday_month_percent": -1}',
            '{"unknown": true}',
            "not json",
        ]:
            with self.subTest(config=config), self.assertRaises(BadConfig):
                rules.evaluate(inp(config, lines=LINES))

    def test_readme_example(self):
        config = {"points_per_currency_unit": 2, "category_percent": {"coffee": 200, "tea": 150}}
        self.assertEqual(
            reasons(rules.evaluate(inp(config, lines=LINES))),
            ["117 base: 2 points per CNY 1", "62 2× coffee", "12 1.5× tea"],
        )


class Calendar(unittest.TestCase):
    def test_weekdays(self):
        self.assertEqual(rules.weekday(0), 4)  # 1970-01-01, a Thursday
        self.assertEqual(rules.weekday(-1), 3)  # 1969-12-31, a Wednesday
        self.assertEqual(rules.weekday(utc(2024, 1, 15) // DAY), 1)
        self.assertEqual(rules.weekday(utc(2024, 1, 14) // DAY), 7)

    def test_civil_from_days(self):
        self.assertEqual(rules.civil_from_days(0), (1970, 1, 1))
        self.assertEqual(rules.civil_from_days(-1), (1969, 12, 31))
        for date in [(2024, 2, 29), (2000, 2, 29), (1900, 3, 1), (1600, 1, 1), (2100, 12, 31)]:
            self.assertEqual(rules.civil_from_days(utc(*date) // DAY), date)

    def test_local_day_floors_and_uses_the_offset(self):
        self.assertEqual(rules.local_day(-1, 0), -1)
        now = utc(2024, 1, 14, 20)
        self.assertEqual(rules.local_day(now, 0), utc(2024, 1, 14) // DAY)
        self.assertEqual(rules.local_day(now, 8 * 3600), utc(2024, 1, 15) // DAY)
        self.assertEqual(rules.local_day(utc(2024, 1, 15, 0, 30), -5 * 3600),
                         utc(2024, 1, 14) // DAY)

    def test_local_instant_saturates(self):
        self.assertEqual(rules.local_day(I64_MAX, 14 * 3600), I64_MAX // DAY)
        self.assertEqual(rules.local_day(-(2**63), -12 * 3600), -(2**63) // DAY)


class Text(unittest.TestCase):
    def test_multiplier(self):
        for percent, text in [(200, "2"), (150, "1.5"), (125, "1.25"), (205, "2.05"),
                              (1000, "10"), (110, "1.1"), (101, "1.01"), (333, "3.33")]:
            self.assertEqual(rules.multiplier(percent), text)

    def test_base_reason_singular_only_for_one(self):
        self.assertEqual(rules.evaluate(inp(total=100))[0].reason, "base: 1 point per CNY 1")
        self.assertEqual(
            rules.evaluate(inp({"points_per_currency_unit": 10}, currency="JPY", exp=0,
                               total=5))[0],
            Award(50, "base: 10 points per JPY 1"),
        )

    def test_category_names_are_exact_and_sorted_by_code_point(self):
        config = {"category_percent": {"茶": 200, "Zz": 200, "aa": 200, "coffee": 200}}
        lines = [("茶", 100), ("Zz", 100), ("aa", 100), ("Coffee", 10_000), ("coffee ", 10_000)]
        self.assertEqual(
            [a.reason for a in rules.evaluate(inp(config, lines=lines))],
            ["base: 1 point per CNY 1", "2× Zz", "2× aa", "2× 茶"],
        )


class Arithmetic(unittest.TestCase):
    def test_floor_of_the_category_sum_not_per_line(self):
        config = {"category_percent": {"coffee": 150}}
        awards = rules.evaluate(inp(config, lines=[("coffee", 300), ("coffee", 300)]))
        self.assertEqual(awards[1:], [Award(3, "1.5× coffee")])

    def test_percent_100_or_less_awards_nothing_extra(self):
        config = {"category_percent": {"coffee": 50, "tea": 100},
                  "member_day": {"weekday": 1, "percent": 0}, "birthday_month_percent": 100}
        self.assertEqual(
            rules.evaluate(inp(config, birthday_month=1, lines=[("coffee", 1_000), ("tea", 1_000)])),
            [Award(20, "base: 1 point per CNY 1")],
        )

    def test_a_negative_product_awards_nothing(self):
        config = {"category_percent": {"coffee": 200}, "member_day": {"weekday": 1, "percent": 200}}
        self.assertEqual(rules.evaluate(inp(config, lines=[("coffee", -5_000)])), [])

    def test_a_negative_total_below_100_percent_does_award(self):
        # floor(x / y) applies whenever x = total × rate × (percent − 100) > 0, as specified.
        config = {"member_day": {"weekday": 1, "percent": 50}}
        self.assertEqual(rules.evaluate(inp(config, total=-1_000)), [Award(5, "member day")])

    def test_results_saturate_at_i64_max(self):
        config = {"points_per_currency_unit": I64_MAX, "category_percent": {"gold": 10**6}}
        awards = rules.evaluate(inp(config, lines=[("gold", I64_MAX)]))
        self.assertEqual([a.points for a in awards], [I64_MAX, I64_MAX])

    def test_category_sums_saturate_in_line_order(self):
        config = {"category_percent": {"x": 200}}
        # MAX, then MAX + 1 → MAX, then MAX − 10 (an exact sum would be MAX − 9).
        lines = [("x", I64_MAX), ("x", 1), ("x", -10)]
        awards = rules.evaluate(inp(config, exp=0, total=0, lines=lines))
        self.assertEqual(awards, [Award(I64_MAX - 10, "2× x")])

    def test_a_product_beyond_i128_saturates(self):
        # total × rate × (percent − 100) > 2^127: i64::MAX whatever the divisor.
        config = {"points_per_currency_unit": I64_MAX, "member_day": {"weekday": 1,
                                                                      "percent": I64_MAX}}
        awards = rules.evaluate(inp(config, exp=30, total=I64_MAX))
        self.assertEqual(awards[-1], Award(I64_MAX, "member day"))

    def test_exponent_capped_at_38(self):
        self.assertEqual(rules.minor_per_unit(2), 100)
        self.assertEqual(rules.minor_per_unit(40), 10**38)


class Config(unittest.TestCase):
    def test_defaults_and_blank_text(self):
        for text in ["{}", "", "   ", "\n\t", "\u3000"]:
            with self.subTest(text=text):
                self.assertEqual(rules.parse_config(text), rules.Config())

    def test_full(self):
        self.assertEqual(
            rules.parse_config('{"points_per_currency_unit": 3, "category_percent": {"a": 0},'
                               ' "member_day": {"percent": 250, "weekday": 7},'
                               ' "birthday_month_percent": 120}'),
            rules.Config(3, {"a": 0}, rules.MemberDay(7, 250), 120),
        )

    def test_nulls_mean_absent_where_optional(self):
        self.assertEqual(rules.parse_config('{"member_day": null, "birthday_month_percent": null}'),
                         rules.Config())

    def test_repeated_category_keeps_the_last_value(self):
        self.assertEqual(
            rules.parse_config('{"category_percent": {"coffee": -5, "coffee": 200}}'),
            rules.Config(category_percent={"coffee": 200}),
        )

    def test_bad(self):
        for text in [
            "\x1c",  # not whitespace to Rust's trim, and not JSON
            "not json",
            "[]",
            "[2]",
            "null",
            '"x"',
            "1",
            '{"points_per_currency_unit": 1} x',
            '{"birthday_month_percent": 200, }',
            '{"points_per_currency_unit": null}',
            '{"points_per_currency_unit": true}',
            '{"points_per_currency_unit": "1"}',
            '{"points_per_currency_unit": 1.5}',
            '{"points_per_currency_unit": 2.0}',
            '{"points_per_currency_unit": 1e2}',
            '{"points_per_currency_unit": -0}',
            '{"points_per_currency_unit": NaN}',
            '{"points_per_currency_unit": Infinity}',
            '{"points_per_currency_unit": 9223372036854775808}',
            '{"points_per_currency_unit": -1}',
            '{"points_per_currency_unit": 1, "points_per_currency_unit": 2}',
            '{"category_percent": null}',
            '{"category_percent": []}',
            '{"category_percent": {"coffee": 200, "coffee": -5}}',
            '{"category_percent": {"coffee": "x", "coffee": 200}}',
            '{"category_percent": {"\\ud800": 200}}',
            '{"member_day": 1}',
            '{"member_day": [1, 200]}',
            '{"member_day": {}}',
            '{"member_day": {"percent": 200}}',
            '{"member_day": {"weekday": 1, "percent": 200, "weekday": 2}}',
            '{"member_day": {"weekday": 1, "percent": 200, "extra": 1}}',
            '{"member_day": {"weekday": 256, "percent": 200}}',
            '{"member_day": {"weekday": -1, "percent": 200}}',
            '{"member_day": {"weekday": 1, "percent": -200}}',
            '{"birthday_month_percent": "200"}',
            '{"birthday_month_percent": -1}',
            '{"Points_per_currency_unit": 1}',
        ]:
            with self.subTest(text=text), self.assertRaises(BadConfig):
                rules.parse_config(text)

    def test_messages_of_the_range_checks_are_the_rust_plugins(self):
        for text, message in [
            ('{"points_per_currency_unit": -1}', "points_per_currency_unit must not be negative"),
            ('{"category_percent": {"b": -1, "a": -2}}', "category_percent.a must not be negative"),
            ('{"member_day": {"weekday": 0, "percent": 200}}',
             "member_day.weekday must be 1 (Monday) to 7 (Sunday)"),
            ('{"member_day": {"weekday": 1, "percent": -1}}',
             "member_day.percent must not be negative"),
            ('{"birthday_month_percent": -1}', "birthday_month_percent must not be negative"),
        ]:
            with self.subTest(text=text):
                with self.assertRaises(BadConfig) as caught:
                    rules.parse_config(text)
                self.assertEqual(str(caught.exception), message)
        with self.assertRaises(BadConfig) as caught:
            rules.parse_config("not json")
        self.assertTrue(str(caught.exception).startswith("configuration is invalid: "))


if __name__ == "__main__":
    unittest.main()
