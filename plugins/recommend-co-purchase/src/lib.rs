//! Recommender: items often bought together with the member's items, then popular ones,
//! skipping what the member bought recently and capping each category.
//! Configuration and exact behaviour: README.md.

use std::collections::{BTreeMap, BTreeSet};

use loyalty_sdk::{
    Candidate, Context, HistoryLine, Member, PluginError, Recommender, Scored, MICROS_PER_DAY,
};
use serde::Deserialize;

/// The plugin's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_exclude_recent_days")]
    exclude_recent_days: u32,
    #[serde(default = "default_max_per_category")]
    max_per_category: u32,
}

fn default_exclude_recent_days() -> u32 {
    30
}

fn default_max_per_category() -> u32 {
    2
}

/// The weight of one co-purchase over one unit of popularity: any co-purchase ranks above
/// popularity alone (popularity rarely reaches a million units in the window).
const CO_PURCHASE_WEIGHT: i64 = 1_000_000;

/// The `recommender` implementation.
pub struct CoPurchase;

impl Recommender for CoPurchase {
    fn recommend(
        ctx: &Context,
        _member: &Member,
        history: &[HistoryLine],
        candidates: &[Candidate],
        limit: u32,
    ) -> Result<Vec<Scored>, PluginError> {
        let config: Config = ctx.config()?;
        if config.max_per_category == 0 {
            return Err(PluginError::bad_config(
                "max_per_category must be at least 1",
            ));
        }
        let window = i64::from(config.exclude_recent_days) * MICROS_PER_DAY;
        let recent: BTreeSet<&str> = history
            .iter()
            .filter(|h| ctx.now.saturating_sub(h.occurred_at) < window)
            .map(|h| h.line.sku.as_str())
            .collect();

        let mut scored: Vec<(i64, &Candidate)> = candidates
            .iter()
            .filter(|c| !recent.contains(c.sku.as_str()))
            .map(|c| {
                let score =
                    i64::from(c.co_purchase_count) * CO_PURCHASE_WEIGHT + i64::from(c.popularity);
                (score, c)
            })
            .collect();
        scored.sort_by(|(a, ca), (b, cb)| b.cmp(a).then_with(|| ca.sku.cmp(&cb.sku)));

        let mut per_category: BTreeMap<&str, u32> = BTreeMap::new();
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut out = Vec::new();
        for (score, candidate) in scored {
            if out.len() >= usize::try_from(limit).unwrap_or(usize::MAX) {
                break;
            }
            // A SKU offered twice is recommended once, at its best score.
            if !seen.insert(candidate.sku.as_str()) {
                continue;
            }
            let count = per_category
                .entry(candidate.category.as_deref().unwrap_or(""))
                .or_insert(0);
            if *count >= config.max_per_category {
                continue;
            }
            *count += 1;
            let reason = match candidate.co_purchase_count {
                0 => "popular".to_owned(),
                1 => "bought with your items 1 time".to_owned(),
                n => format!("bought with your items {n} times"),
            };
            out.push(Scored {
                sku: candidate.sku.clone(),
                score,
                reason,
            });
        }
        Ok(out)
    }
}

loyalty_sdk::export_recommender!(CoPurchase);

#[cfg(test)]
mod tests {
    use super::*;
    use loyalty_sdk::testing::{
        candidate, history_line, ContextBuilder, MemberBuilder, DEFAULT_NOW,
    };
    use serde_json::json;

    fn run(
        config: serde_json::Value,
        history: &[HistoryLine],
        candidates: &[Candidate],
        limit: u32,
    ) -> Vec<(String, i64, String)> {
        let ctx = ContextBuilder::new().config(config).build();
        CoPurchase::recommend(
            &ctx,
            &MemberBuilder::new().build(),
            history,
            candidates,
            limit,
        )
        .expect("valid config")
        .into_iter()
        .map(|s| (s.sku, s.score, s.reason))
        .collect()
    }

    fn row(sku: &str, score: i64, reason: &str) -> (String, i64, String) {
        (sku.into(), score, reason.into())
    }

    #[test]
    fn co_purchase_outranks_popularity_then_sku_breaks_ties() {
        let candidates = [
            candidate("muffin", Some("food"), 900, 0),
            candidate("latte", Some("coffee"), 10, 3),
            candidate("bagel", Some("food"), 900, 0),
            candidate("mocha", Some("coffee"), 5, 1),
        ];
        assert_eq!(
            run(json!({}), &[], &candidates, 10),
            [
                row("latte", 3_000_010, "bought with your items 3 times"),
                row("mocha", 1_000_005, "bought with your items 1 time"),
                row("bagel", 900, "popular"),
                row("muffin", 900, "popular"),
            ]
        );
        assert_eq!(run(json!({}), &[], &candidates, 1).len(), 1);
        assert!(run(json!({}), &[], &candidates, 0).is_empty());
    }

    #[test]
    fn recent_purchases_are_excluded() {
        let candidates = [
            candidate("latte", None, 1, 0),
            candidate("mocha", None, 2, 0),
        ];
        let history = [
            history_line("latte", None, DEFAULT_NOW - 29 * MICROS_PER_DAY),
            history_line("mocha", None, DEFAULT_NOW - 30 * MICROS_PER_DAY),
        ];
        assert_eq!(
            run(json!({}), &history, &candidates, 10),
            [row("mocha", 2, "popular")]
        );
        let skus: Vec<_> = run(
            json!({"exclude_recent_days": 31}),
            &history,
            &candidates,
            10,
        );
        assert!(skus.is_empty());
    }

    #[test]
    fn categories_are_capped_and_none_is_its_own() {
        let candidates = [
            candidate("a", Some("coffee"), 9, 0),
            candidate("b", Some("coffee"), 8, 0),
            candidate("c", Some("coffee"), 7, 0),
            candidate("d", None, 6, 0),
            candidate("e", None, 5, 0),
            candidate("f", Some(""), 4, 0),
        ];
        let skus: Vec<String> = run(json!({"max_per_category": 1}), &[], &candidates, 10)
            .into_iter()
            .map(|(sku, _, _)| sku)
            .collect();
        assert_eq!(skus, ["a", "d"]);
        let skus: Vec<String> = run(json!({}), &[], &candidates, 10)
            .into_iter()
            .map(|(sku, _, _)| sku)
            .collect();
        assert_eq!(skus, ["a", "b", "d", "e"]);
    }

    #[test]
    fn duplicate_skus_once() {
        let candidates = [candidate("a", None, 1, 0), candidate("a", None, 5, 0)];
        assert_eq!(
            run(json!({}), &[], &candidates, 10),
            [row("a", 5, "popular")]
        );
    }

    #[test]
    fn bad_config() {
        for config in [
            json!({"max_per_category": 0}),
            json!({"exclude_recent_days": -1}),
            json!({"limit": 3}),
        ] {
            let ctx = ContextBuilder::new().config(config.clone()).build();
            let e = CoPurchase::recommend(&ctx, &MemberBuilder::new().build(), &[], &[], 5)
                .expect_err("invalid config");
            assert_eq!(e.code, "bad-config", "{config}");
        }
    }
}
