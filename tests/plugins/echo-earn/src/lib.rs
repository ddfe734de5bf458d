//! A well-behaved earn rule whose single award describes its whole input, for determinism
//! tests: the same input must give byte-identical output, and any change in the input shows.
//!
//! reason: `lines=<n> total=<total> member=<id> config_len=<bytes> now=<now> digest=<16 hex>`
//! where the digest is FNV-1a 64 of the `Debug` text of the context, member and purchase;
//! points: `digest % 1000 + 1`.

use loyalty_sdk::{Award, Context, EarnRule, Member, PluginError, Purchase};

/// The earn rule.
pub struct Echo;

/// FNV-1a, 64-bit: tiny, dependency-free and deterministic (not for security).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl EarnRule for Echo {
    fn evaluate(
        ctx: &Context,
        member: &Member,
        purchase: &Purchase,
    ) -> Result<Vec<Award>, PluginError> {
        let digest = fnv1a(format!("{ctx:?}|{member:?}|{purchase:?}").as_bytes());
        let points = i64::try_from(digest % 1000).expect("below 1000") + 1;
        let reason = format!(
            "lines={} total={} member={} config_len={} now={} digest={digest:016x}",
            purchase.lines.len(),
            purchase.total,
            member.id,
            ctx.config.len(),
            ctx.now,
        );
        Ok(vec![Award::new(points, reason)])
    }
}

loyalty_sdk::export_earn_rule!(Echo);

#[cfg(test)]
mod tests {
    use super::*;
    use loyalty_sdk::testing::{ContextBuilder, MemberBuilder, PurchaseBuilder};

    #[test]
    fn same_input_same_award_and_changes_show() {
        let ctx = ContextBuilder::new().build();
        let member = MemberBuilder::new().build();
        let purchase = PurchaseBuilder::new().line("a", None, 2, 150).build();
        let once = Echo::evaluate(&ctx, &member, &purchase).expect("ok");
        assert_eq!(once, Echo::evaluate(&ctx, &member, &purchase).expect("ok"));
        assert!(once[0]
            .reason
            .starts_with("lines=1 total=300 member=mem_test config_len=2 now="));
        let other = ContextBuilder::new().timezone("Asia/Shanghai").build();
        let changed = Echo::evaluate(&other, &member, &purchase).expect("ok");
        assert_ne!(
            once[0].reason, changed[0].reason,
            "the digest covers the whole input"
        );
    }
}
