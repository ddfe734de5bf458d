"""The component's entry point: adapts the WIT types of `loyalty:plugin/earn@0.1.0` to `rules`.

`componentize-py` generates the `wit_world` package while it builds the component; this module
is the only one that imports it. The class name `Earn` is what componentize-py looks for: it
implements the exported interface `earn`.
"""

from typing import List

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.earn import Award
from wit_world.imports import types

import rules


class Earn(exports.Earn):
    def evaluate(
        self, ctx: types.Context, member: types.Member, purchase: types.Purchase
    ) -> List[Award]:
        inp = rules.Input(
            config=ctx.config,
            now=ctx.now,
            utc_offset_seconds=ctx.utc_offset_seconds,
            currency=ctx.currency,
            currency_exponent=ctx.currency_exponent,
            birthday_month=member.birthday.month if member.birthday is not None else None,
            total=purchase.total,
            lines=[(line.category, line.total) for line in purchase.lines],
        )
        try:
            awards = rules.evaluate(inp)
        except rules.BadConfig as e:
            # Like the Rust plugin: the error only, no log line (the host records the error).
            raise Err(types.Error(code="bad-config", message=str(e)))
        return [Award(points=a.points, reason=a.reason, expires_at=None) for a in awards]
