//! Reads one case per line (JSON: config, now, offset, currency, exp, birthday month or
//! null, total, lines as [category or null, total]) and prints what the Rust plugin answers:
//! {"ok": [[points, reason, expires-at], …]} or {"err": code, "message": …}.

use earn_category_multiplier::CategoryMultiplier;
use loyalty_sdk::{Context, Date, EarnRule, Member, MemberStats, Purchase, PurchaseLine};
use serde_json::{json, Value};
use std::io::BufRead;
fn main() {
    for line in std::io::stdin().lock().lines() {
        let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
        let ctx = Context {
            merchant_id: "mer_1".into(), store_id: None,
            now: v["now"].as_i64().unwrap(), timezone: "UTC".into(),
            utc_offset_seconds: v["offset"].as_i64().unwrap() as i32,
            config: v["config"].as_str().unwrap().into(),
            currency: v["currency"].as_str().unwrap().into(),
            currency_exponent: v["exp"].as_u64().unwrap() as u8,
        };
        let birthday = if v["birthday"].is_null() { None } else {
            Some(Date { year: 1990, month: v["birthday"].as_u64().unwrap() as u8, day: 1 }) };
        let member = Member { id: "mem_1".into(), tier: None, joined_at: 0, birthday,
            attributes: "{}".into(),
            stats: MemberStats { lifetime_spend: 0, spend_12_months: 0, orders_count: 0,
                last_purchase_at: None, points_available: 0 } };
        let lines = v["lines"].as_array().unwrap().iter().map(|l| PurchaseLine {
            sku: "x".into(), name: None, category: l[0].as_str().map(|s| s.to_string()),
            quantity: 1, unit_price: l[1].as_i64().unwrap(), total: l[1].as_i64().unwrap() }).collect();
        let purchase = Purchase { id: "pur_1".into(), store_id: "sto_1".into(), channel: "pos".into(),
            occurred_at: 0, currency: "CNY".into(), lines, total: v["total"].as_i64().unwrap() };
        let out = match CategoryMultiplier::evaluate(&ctx, &member, &purchase) {
            Ok(awards) => json!({"ok": awards.iter().map(|a| json!([a.points, a.reason, a.expires_at])).collect::<Vec<_>>()}),
            Err(e) => json!({"err": e.code, "message": e.message}),
        };
        println!("{out}");
    }
}
