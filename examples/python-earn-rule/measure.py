"""Runs the built component in wasmtime and measures what the host's limits must allow.

Optional; needs the `wasmtime` Python package at the host's wasmtime version:

    python3 -m venv /tmp/wt && /tmp/wt/bin/pip install wasmtime==48.0.0
    /tmp/wt/bin/python examples/python-earn-rule/measure.py target/plugins/python/python_earn_rule.wasm [LINES]

Prints the component's imports and exports, the awards for a sample purchase of LINES lines
(default 3), the fuel of instantiation and of each of three calls, and the smallest per-memory
limit (64 KiB pages), core-instance and table-element limits under which it instantiates and
answers one call. The compiled component is cached next to the input as `.cwasm`.
"""

import json
import os
import sys
import time

import wasmtime
from wasmtime import Config, Engine, Store
from wasmtime.component import Component, Linker, Record

EARN = "loyalty:plugin/earn@0.1.0"
HOST = "loyalty:plugin/host@0.1.0"
PAGE = 65536


def rec(**fields):
    r = Record()
    for k, v in fields.items():
        setattr(r, k.replace("_", "-"), v)
    return r


def sample(lines):
    config = json.dumps({"points_per_currency_unit": 1,
                         "category_percent": {"coffee": 200, "tea": 150},
                         "member_day": {"weekday": 1, "percent": 200},
                         "birthday_month_percent": 150})
    # 2024-05-06 01:00 UTC: Monday 09:00 in Shanghai.
    ctx = rec(merchant_id="mer_1", store_id=None, now=(19_849 * 86_400 + 3_600) * 10**6,
              timezone="Asia/Shanghai", utc_offset_seconds=8 * 3600, config=config,
              currency="CNY", currency_exponent=2)
    stats = rec(lifetime_spend=0, spend_12_months=0, orders_count=0, last_purchase_at=None,
                points_available=0)
    member = rec(id="mem_1", tier=None, joined_at=0, birthday=rec(year=1990, month=5, day=4),
                 attributes="{}", stats=stats)
    cats = ["coffee", "tea", None]
    ls = [rec(sku=f"sku-{i}", name=None, category=cats[i % 3], quantity=1, unit_price=1_550,
              total=1_550) for i in range(lines)]
    purchase = rec(id="pur_1", store_id="sto_1", channel="pos", occurred_at=0, currency="CNY",
                   lines=ls, total=1_550 * lines)
    return ctx, member, purchase


def main():
    path = sys.argv[1]
    lines = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    config = Config()
    config.consume_fuel = True
    engine = Engine(config)
    cache = path + ".cwasm"
    if not os.path.exists(cache) or os.path.getmtime(cache) < os.path.getmtime(path):
        t = time.time()
        compiled = Component.from_file(engine, path)
        print(f"compile: {time.time() - t:.1f} s")
        with open(cache, "wb") as f:
            f.write(compiled.serialize())
    component = Component.deserialize_file(engine, cache)
    print("imports:", ", ".join(sorted(component.type.imports(engine))))
    print("exports:", ", ".join(sorted(component.type.exports(engine))))

    linker = Linker(engine)
    linker.add_wasip2()  # unused by a --stub-wasi build; needed by one without
    logs = []
    with linker.root() as root:
        with root.add_instance(HOST) as host:
            host.add_func("log", lambda store, level, message: logs.append((level, message)))
    args = sample(lines)

    def run(calls=1, **limits):
        store = Store(engine)
        store.set_wasi(wasmtime.WasiConfig())
        store.set_fuel(10**12)
        if limits:
            store.set_limits(**limits)
        fuel = [10**12]
        try:
            instance = linker.instantiate(store, component)
            fuel.append(store.get_fuel())
            evaluate = instance.get_func(
                store, instance.get_export_index(store, "evaluate",
                                                 instance.get_export_index(store, EARN)))
            out = None
            for _ in range(calls):
                out = evaluate(store, *args)
                evaluate.post_return(store)
                fuel.append(store.get_fuel())
        except Exception as e:  # a limit was hit
            return None, str(e).splitlines()[0]
        return out, [a - b for a, b in zip(fuel, fuel[1:])]

    out, fuel = run(calls=3)
    print(f"purchase of {lines} line(s):")
    if isinstance(out, list):
        for a in out:
            print(f"  {a.points:>8}  {a.reason!r}  expires-at={a.__dict__['expires-at']}")
    else:
        print("  error:", getattr(out, "__dict__", out))
    print("logs:", logs)
    print(f"fuel: instantiate {fuel[0]}, calls {', '.join(str(f) for f in fuel[1:])}")

    def smallest(ok, lo, hi):
        while lo < hi:
            mid = (lo + hi) // 2
            if ok(mid):
                hi = mid
            else:
                lo = mid + 1
        return lo

    pages = smallest(lambda n: run(memory_size=n * PAGE)[0] is not None, 1, 65536)
    print(f"memory: {pages} pages = {pages * PAGE / 2**20:.2f} MiB per linear memory")
    print("core instances:", smallest(lambda n: run(instances=n)[0] is not None, 1, 10_000))
    print("table elements:", smallest(lambda n: run(table_elements=n)[0] is not None, 1, 1 << 20))


if __name__ == "__main__":
    main()
