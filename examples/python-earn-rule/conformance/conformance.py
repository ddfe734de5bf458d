"""Differential test of `src/rules.py` against the Rust plugin `earn-category-multiplier`.

    bash examples/python-earn-rule/conformance/run.sh [CASES] [SEED]

Generates random inputs (configurations valid and not, odd JSON, extreme numbers, times and
offsets), runs each through rules.py and through the Rust plugin (natively, through the
`earn-category-multiplier-conformance` binary), and compares the awards byte for byte, or the
error code. Error messages are compared only in count: serde_json's wording is not specified.

`KNOWN` lists inputs where the Rust plugin does not follow its own README; they are left out
of the random cases and reported separately, so a fix on either side shows up here.
"""

import json
import os
import random
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import rules  # noqa: E402

I64_MAX = 2**63 - 1
I64_MIN = -(2**63)
CATEGORIES = ["coffee", "tea", "Coffee", "茶", "", "a b", "z"]

ODD_CONFIGS = [
    "", " ", "\u3000{}\u3000", "\x1c", "not json", "null", "{}", '{"a": 1}',
    '{"points_per_currency_unit": -0}', '{"points_per_currency_unit": 1e2}',
    '{"points_per_currency_unit": NaN}', '{"points_per_currency_unit": 9223372036854775808}',
    '{"category_percent": {"\\ud800": 200}}',
    '{"points_per_currency_unit": 1, "points_per_currency_unit": 2}',
    '{"category_percent": {"coffee": -5, "coffee": 200}}',
    '{"category_percent": {"coffee": 200, "coffee": -5}}',
    '{"category_percent": {"coffee": "x", "coffee": 200}}',
    '{"member_day": {"weekday": 1, "percent": 200, "weekday": 1}}',
    '{"member_day": {"weekday": 256, "percent": 200}}',
]

# The README says the configuration must be a JSON object of the documented shape, and the
# awards are computed for any u8 currency exponent; the Rust plugin differs here.
KNOWN = [
    ("serde reads a struct from a JSON array: '[2]' is accepted as rate 2",
     {"config": "[2]"}),
    ("serde reads member_day from a JSON array",
     {"config": '{"member_day": [1, 200]}'}),
    ("100 × 10^exp overflows i128 for currency-exponent ≥ 37 (a panic in debug builds)",
     {"config": '{"member_day": {"weekday": 1, "percent": 200}}', "exp": 37}),
]


def random_int(r):
    return r.choice([0, 1, 2, 3, 7, 10, 99, 100, 101, 105, 110, 125, 150, 199, 200, 250, 300,
                     1000, 12345, -1, -100, I64_MAX, I64_MIN, I64_MAX - 1, 2**62, 10**18, 255,
                     256])


def random_value(r):
    if r.random() < 0.75:
        return random_int(r)
    return r.choice([None, True, "200", 2.0, 1.5, {}, "x"])


def random_config(r):
    if r.random() < 0.1:
        return r.choice(ODD_CONFIGS)
    c = {}
    if r.random() < 0.7:
        c["points_per_currency_unit"] = (r.choice([0, 1, 1, 2, 3, 10, 100])
                                         if r.random() < 0.9 else random_value(r))
    if r.random() < 0.8:
        c["category_percent"] = {
            r.choice(CATEGORIES): (r.choice([0, 50, 100, 101, 110, 125, 150, 200, 205, 300, 1000])
                                   if r.random() < 0.9 else random_value(r))
            for _ in range(r.randint(0, 4))}
    if r.random() < 0.6:
        md = {"weekday": r.randint(1, 7) if r.random() < 0.9 else random_value(r),
              "percent": r.choice([0, 100, 150, 200, 300]) if r.random() < 0.9 else random_value(r)}
        if r.random() < 0.05:
            del md["percent"]
        if r.random() < 0.05:
            md["x"] = 1
        c["member_day"] = md if r.random() < 0.95 else None
    if r.random() < 0.6:
        c["birthday_month_percent"] = (r.choice([0, 100, 150, 200])
                                       if r.random() < 0.9 else random_value(r))
    if r.random() < 0.03:
        c["extra"] = 1
    return json.dumps(c, ensure_ascii=r.random() < 0.5)


def random_case(r):
    lines = [[r.choice(CATEGORIES + [None]),
              r.choice([r.randint(0, 100_000), r.randint(-1000, 1000)]
                       + ([I64_MAX, I64_MIN] if r.random() < 0.05 else []))]
             for _ in range(r.randint(0, 8))]
    total = sum(line[1] for line in lines)
    if r.random() < 0.1:
        total = r.choice([0, -5000, I64_MAX, 99, 100])
    return {
        "now": r.choice([r.randint(-10**16, 4 * 10**15),
                         r.randint(1_600_000_000_000_000, 1_800_000_000_000_000),
                         I64_MAX, I64_MIN]),
        "offset": r.choice([0, 8 * 3600, -5 * 3600, 14 * 3600, -12 * 3600, 5 * 3600 + 1800]),
        "config": random_config(r),
        "currency": r.choice(["CNY", "JPY", "KWD"]),
        "exp": r.choice([0, 2, 3, 18, 30, 36]) if r.random() < 0.2 else 2,
        "birthday": r.choice([None, 1, 5, 12, 13]),
        "total": max(min(total, I64_MAX), I64_MIN),
        "lines": lines,
    }


def base_case(**changes):
    case = {"now": 1_705_320_000_000_000, "offset": 0, "config": "{}", "currency": "CNY",
            "exp": 2, "birthday": 1, "total": 5874, "lines": [["coffee", 3100], [None, 2774]]}
    case.update(changes)
    return case


def python_answer(case):
    inp = rules.Input(case["config"], case["now"], case["offset"], case["currency"], case["exp"],
                      case["birthday"], case["total"], [tuple(line) for line in case["lines"]])
    try:
        return {"ok": [[a.points, a.reason, None] for a in rules.evaluate(inp)]}
    except rules.BadConfig as e:
        return {"err": "bad-config", "message": str(e)}


def rust_answers(binary, cases):
    proc = subprocess.run([binary], input="".join(json.dumps(c) + "\n" for c in cases),
                          capture_output=True, text=True)
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    if proc.returncode != 0:  # a panic ends the batch; report it as the next answer
        out.append({"panic": proc.stderr.strip().splitlines()[1:2]})
    return out


def same(rust, python):
    return (rust.get("ok") == python.get("ok") and rust.get("err") == python.get("err")
            and ("ok" in rust) == ("ok" in python))


def main():
    binary, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    r = random.Random(seed)
    cases = [random_case(r) for _ in range(n)]
    answers = rust_answers(binary, cases)
    mismatches, messages = 0, 0
    for case, rust in zip(cases, answers):
        python = python_answer(case)
        if not same(rust, python):
            mismatches += 1
            if mismatches <= 5:
                print("MISMATCH", json.dumps(case, ensure_ascii=False))
                print("  rust:  ", rust)
                print("  python:", python)
        elif "err" in rust and rust["message"] != python["message"]:
            messages += 1
    print(f"{len(answers)} of {n} random cases answered by the Rust plugin (seed {seed}); "
          f"{mismatches} differ; {messages} errors worded differently (not compared)")

    print("known differences (the Rust plugin vs its README):")
    for what, changes in KNOWN:
        case = base_case(**changes)
        rust = rust_answers(binary, [case])[0]
        verdict = "now agrees" if same(rust, python_answer(case)) else "still differs"
        print(f"  {verdict}: {what}")
    sys.exit(1 if mismatches or len(answers) != n else 0)


if __name__ == "__main__":
    main()
