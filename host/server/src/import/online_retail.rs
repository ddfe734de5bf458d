//! The UCI Online Retail data set (Chen 2015, CC BY 4.0; `../shared/data/README.md`): one
//! CSV line per invoice line — InvoiceNo, StockCode, Description, Quantity, InvoiceDate
//! (`YYYY-MM-DD HH:MM:SS`, the shop's local time), UnitPrice, CustomerID (empty for guests),
//! Country.
//!
//! How it maps (see the README's "Import real data"):
//! - a **store** per country, code from the name (`United Kingdom` → `UNITED-KINGDOM`);
//! - a **member** per CustomerID (`external_id`);
//! - a **purchase** per sale invoice (`external_id` = InvoiceNo), paid by card, at the
//!   invoice's time read in the merchant's time zone. An invoice of more than 500 lines (the
//!   API's limit) becomes purchases of at most 500 lines: `581219`, `581219-2`, …;
//! - a **cancellation** (`C…` invoice, negative quantities) refunds, line by line, the
//!   member's earlier purchases of that StockCode that still have unrefunded quantity,
//!   **newest first**, by items (at the purchase's own price): one refund per purchase it
//!   touches. Quantity beyond what was bought is left out (noted);
//! - left out and counted by reason: guest lines, malformed lines, sale lines with a
//!   quantity or price of zero or less, cancellation lines that match no earlier purchase.
//!   A price with more decimals than the currency has is rounded half away from zero (noted);
//!   one that rounds to zero is left out like any zero price.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use anyhow::Context;
use loyalty_core::merchants::NAME_LENGTH_MAX;
use loyalty_core::operations::{ITEMS_PER_PURCHASE_MAX, QUANTITY_MAX};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};

use super::{count, Item, MemberPlan, Op, Plan, PurchaseOp, RefundOp, StorePlan};

pub const SOURCE: &str = "online-retail";
/// Every Idempotency-Key of this import starts with it: `import:online-retail:536365` for a
/// purchase, `import:online-retail:C536379:536365` for a refund of it.
pub const KEY_PREFIX: &str = "import:online-retail:";
/// The columns the file must have (in any order, more are ignored).
pub const COLUMNS: [&str; 8] = [
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
];
/// Longest InvoiceNo accepted (it becomes an external id and part of keys).
pub const INVOICE_LENGTH_MAX: usize = 40;

pub const GUEST: &str = "guest line (no CustomerID)";
pub const UNMATCHED: &str = "cancellation line matching no earlier purchase of the item";
pub const ZERO_PRICE: &str = "sale line with a unit price of zero or less";
pub const ZERO_QUANTITY: &str = "sale line with a quantity of zero or less";
pub const POSITIVE_CANCELLATION: &str = "cancellation line with a quantity of zero or more";
pub const HUGE_QUANTITY: &str = "quantity beyond 1,000,000";
pub const OTHER_INVOICE: &str = "invoice neither a sale (digits) nor a cancellation (C…)";
pub const OTHER_CUSTOMER: &str = "line of another CustomerID than its invoice's first line";
pub const PARTLY_MATCHED: &str =
    "cancellation lines matched only in part (the rest exceeds earlier purchases)";
pub const SPLIT: &str = "invoices over 500 lines split into purchases of at most 500 lines";

fn malformed(column: &str) -> String {
    format!("malformed line ({column})")
}

fn rounded_note(exponent: u32) -> String {
    format!("unit prices rounded to {exponent} decimals (half away from zero)")
}

/// The file's text; `.gz` (by its magic bytes) is decompressed.
pub fn read_file(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut text = Vec::with_capacity(bytes.len() * 8);
        flate2::read::MultiGzDecoder::new(bytes.as_slice())
            .read_to_end(&mut text)
            .with_context(|| format!("decompressing {}", path.display()))?;
        text
    } else {
        bytes
    };
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", path.display()))
}

/// The store code of a country: ASCII letters and digits upper-cased, anything else a dash.
pub fn store_code(country: &str) -> String {
    let mut code = String::with_capacity(country.len());
    for character in country.chars() {
        if character.is_ascii_alphanumeric() {
            code.push(character.to_ascii_uppercase());
        } else if !code.is_empty() && !code.ends_with('-') {
            code.push('-');
        }
    }
    let code = code.trim_end_matches('-');
    let code: String = code
        .chars()
        .take(loyalty_core::stores::CODE_LENGTH_MAX)
        .collect();
    if code.is_empty() {
        "UNSPECIFIED".to_string()
    } else {
        code
    }
}

/// "2010-12-01 08:26:00" (seconds optional, `T` allowed) in `zone` → unix µs.
fn parse_time(text: &str, zone: &jiff::tz::TimeZone) -> Option<i64> {
    let (date, time) = text.split_once([' ', 'T'])?;
    let mut date = date.split('-');
    let year: i16 = date.next()?.parse().ok()?;
    let month: i8 = date.next()?.parse().ok()?;
    let day: i8 = date.next()?.parse().ok()?;
    let mut time = time.split(':');
    let hour: i8 = time.next()?.parse().ok()?;
    let minute: i8 = time.next()?.parse().ok()?;
    let second: i8 = match time.next() {
        Some(second) => second.parse().ok()?,
        None => 0,
    };
    if date.next().is_some() || time.next().is_some() {
        return None;
    }
    let civil = jiff::civil::DateTime::new(year, month, day, hour, minute, second, 0).ok()?;
    Some(zone.to_timestamp(civil).ok()?.as_microsecond())
}

/// "17850" and "17850.0" (a spreadsheet's float) are the same customer.
fn customer_id(text: &str) -> &str {
    match text.strip_suffix(".0") {
        Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => digits,
        _ => text,
    }
}

struct Invoice {
    number: String,
    cancellation: bool,
    customer: String,
    country: String,
    at: i64,
    lines: Vec<Item>,
}

/// Reads the data set and plans the import for a merchant whose currency has `exponent`
/// decimals and whose local time is `zone`.
pub fn plan(text: &str, exponent: u32, zone: &jiff::tz::TimeZone) -> anyhow::Result<Plan> {
    // Flexible: a short or long line is counted as malformed below, not an error of the file.
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.strip_prefix('\u{feff}').unwrap_or(text).as_bytes());
    let header = reader
        .headers()
        .context("the file's header is not CSV")?
        .clone();
    if header.is_empty() {
        anyhow::bail!("the file is empty");
    }
    let mut columns = [0_usize; 8];
    for (slot, name) in columns.iter_mut().zip(COLUMNS) {
        *slot = header
            .iter()
            .position(|field| field.trim().eq_ignore_ascii_case(name))
            .with_context(|| {
                format!("not the Online Retail data set: no {name} column in the header")
            })?;
    }
    let [c_invoice, c_sku, c_description, c_quantity, c_date, c_price, c_customer, c_country] =
        columns;
    let width = columns.iter().max().expect("eight columns") + 1;
    let scale = Decimal::from(10_i64.pow(exponent));
    let price_max = Decimal::from(loyalty_core::money::MONEY_MAJOR_UNITS_MAX);
    let rounded = rounded_note(exponent);

    let mut plan = Plan {
        key_prefix: KEY_PREFIX.to_string(),
        ..Plan::default()
    };
    let mut invoice_numbers: HashSet<String> = HashSet::new();
    let mut invoices: Vec<Invoice> = Vec::new();
    let mut invoice_index: HashMap<String, usize> = HashMap::new();
    let mut customers: Vec<(String, i64)> = Vec::new();
    let mut customer_index: HashMap<String, usize> = HashMap::new();

    for record in reader.records() {
        plan.lines_read += 1;
        let Ok(fields) = record else {
            count(&mut plan.skipped, malformed("not CSV"), 1);
            continue;
        };
        if fields.len() < width {
            count(&mut plan.skipped, malformed("too few fields"), 1);
            continue;
        }
        let number = fields[c_invoice].trim();
        if !number.is_empty() && !invoice_numbers.contains(number) {
            invoice_numbers.insert(number.to_string());
        }
        if number.is_empty()
            || number.len() > INVOICE_LENGTH_MAX
            || !number
                .bytes()
                .all(|byte| byte.is_ascii_graphic() && byte != b':')
        {
            count(&mut plan.skipped, malformed("InvoiceNo"), 1);
            continue;
        }
        let sku = fields[c_sku].trim();
        if sku.is_empty() || sku.len() > loyalty_core::stores::CODE_LENGTH_MAX {
            count(&mut plan.skipped, malformed("StockCode"), 1);
            continue;
        }
        let Ok(quantity) = fields[c_quantity].trim().parse::<i64>() else {
            count(&mut plan.skipped, malformed("Quantity"), 1);
            continue;
        };
        let Some(at) = parse_time(fields[c_date].trim(), zone) else {
            count(&mut plan.skipped, malformed("InvoiceDate"), 1);
            continue;
        };
        let Ok(price) = Decimal::from_str(fields[c_price].trim()) else {
            count(&mut plan.skipped, malformed("UnitPrice"), 1);
            continue;
        };
        let customer = customer_id(fields[c_customer].trim());
        if customer.is_empty() {
            count(&mut plan.skipped, GUEST, 1);
            continue;
        }
        if customer.len() > loyalty_core::members::EXTERNAL_ID_LENGTH_MAX {
            count(&mut plan.skipped, malformed("CustomerID"), 1);
            continue;
        }
        let cancellation = number.starts_with('C');
        if !cancellation && !number.bytes().all(|byte| byte.is_ascii_digit()) {
            count(&mut plan.skipped, OTHER_INVOICE, 1);
            continue;
        }
        match customer_index.get(customer) {
            Some(&index) => customers[index].1 = customers[index].1.min(at),
            None => {
                customer_index.insert(customer.to_string(), customers.len());
                customers.push((customer.to_string(), at));
            }
        }
        let item = if cancellation {
            if quantity >= 0 {
                count(&mut plan.skipped, POSITIVE_CANCELLATION, 1);
                continue;
            }
            if -quantity > QUANTITY_MAX {
                count(&mut plan.skipped, HUGE_QUANTITY, 1);
                continue;
            }
            Item {
                sku: sku.to_string(),
                name: None,
                quantity: -quantity,
                unit_price: 0,
            }
        } else {
            if quantity <= 0 {
                count(&mut plan.skipped, ZERO_QUANTITY, 1);
                continue;
            }
            if quantity > QUANTITY_MAX {
                count(&mut plan.skipped, HUGE_QUANTITY, 1);
                continue;
            }
            let exact =
                price.round_dp_with_strategy(exponent, RoundingStrategy::MidpointAwayFromZero);
            if exact != price {
                count(&mut plan.notes, rounded.as_str(), 1);
            }
            if exact <= Decimal::ZERO {
                count(&mut plan.skipped, ZERO_PRICE, 1);
                continue;
            }
            let Some(unit_price) = (exact <= price_max)
                .then(|| (exact * scale).to_i64())
                .flatten()
            else {
                count(&mut plan.skipped, malformed("UnitPrice out of range"), 1);
                continue;
            };
            let description = fields[c_description].trim();
            Item {
                sku: sku.to_string(),
                name: (!description.is_empty())
                    .then(|| description.chars().take(NAME_LENGTH_MAX).collect()),
                quantity,
                unit_price,
            }
        };
        let index = match invoice_index.get(number) {
            Some(&index) => index,
            None => {
                let country = fields[c_country].trim();
                invoice_index.insert(number.to_string(), invoices.len());
                invoices.push(Invoice {
                    number: number.to_string(),
                    cancellation,
                    customer: customer.to_string(),
                    country: if country.is_empty() {
                        "Unspecified".to_string()
                    } else {
                        country.to_string()
                    },
                    at,
                    lines: Vec::new(),
                });
                invoices.len() - 1
            }
        };
        let invoice = &mut invoices[index];
        if invoice.customer != customer {
            count(&mut plan.skipped, OTHER_CUSTOMER, 1);
            continue;
        }
        invoice.at = invoice.at.min(at);
        invoice.lines.push(item);
    }
    plan.invoices = invoice_numbers.len() as u64;
    plan.cancellations = invoice_numbers
        .iter()
        .filter(|number| number.starts_with('C'))
        .count() as u64;
    plan.sales = plan.invoices - plan.cancellations;

    // each member's invoices in time order (at the same minute: sales before cancellations,
    // since digits sort before `C`)
    let mut by_customer: Vec<Vec<Invoice>> = customers.iter().map(|_| Vec::new()).collect();
    for invoice in invoices {
        by_customer[customer_index[&invoice.customer]].push(invoice);
    }
    let mut stores: Vec<StorePlan> = Vec::new();
    let mut store_index: HashMap<String, usize> = HashMap::new();
    for ((external_id, first_at), mut invoices) in customers.into_iter().zip(by_customer) {
        invoices.sort_by(|a, b| (a.at, &a.number).cmp(&(b.at, &b.number)));
        let mut ops = Vec::new();
        // this member's purchases so far: key, external id, open quantity per sku
        let mut bought: Vec<(String, HashMap<String, i64>)> = Vec::new();
        for invoice in invoices {
            if invoice.cancellation {
                ops.extend(match_cancellation(&mut plan, &mut bought, invoice));
                continue;
            }
            let code = store_code(&invoice.country);
            match store_index.get(&code) {
                Some(&index) => stores[index].first_at = stores[index].first_at.min(invoice.at),
                None => {
                    store_index.insert(code.clone(), stores.len());
                    stores.push(StorePlan {
                        code: code.clone(),
                        name: invoice.country.chars().take(NAME_LENGTH_MAX).collect(),
                        first_at: invoice.at,
                    });
                }
            }
            if invoice.lines.len() > ITEMS_PER_PURCHASE_MAX {
                count(&mut plan.notes, SPLIT, 1);
            }
            for (part, items) in invoice.lines.chunks(ITEMS_PER_PURCHASE_MAX).enumerate() {
                let external_id = if part == 0 {
                    invoice.number.clone()
                } else {
                    format!("{}-{}", invoice.number, part + 1)
                };
                let key = format!("{KEY_PREFIX}{external_id}");
                let mut open: HashMap<String, i64> = HashMap::new();
                for item in items {
                    *open.entry(item.sku.clone()).or_default() += item.quantity;
                }
                bought.push((external_id.clone(), open));
                ops.push(Op::Purchase(PurchaseOp {
                    key,
                    external_id,
                    at: invoice.at,
                    store_code: code.clone(),
                    items: items.to_vec(),
                    lines: items.len() as u64,
                }));
            }
        }
        plan.members.push(MemberPlan {
            external_id,
            first_at,
            ops,
        });
    }
    plan.stores = stores;
    Ok(plan)
}

/// (sku, quantity) of a refund.
type RefundItems = Vec<(String, i64)>;

/// The refunds of one cancellation: each line takes from the member's newest earlier
/// purchase that still has the item, then the one before, …
fn match_cancellation(
    plan: &mut Plan,
    bought: &mut [(String, HashMap<String, i64>)],
    invoice: Invoice,
) -> Vec<Op> {
    // per purchase touched (index into `bought`), in order of first touch: items and lines
    let mut refunds: Vec<(usize, RefundItems, u64)> = Vec::new();
    for line in &invoice.lines {
        let mut wanted = line.quantity;
        let mut first_touch = true;
        for index in (0..bought.len()).rev() {
            if wanted == 0 {
                break;
            }
            let Some(open) = bought[index].1.get_mut(&line.sku) else {
                continue;
            };
            if *open == 0 {
                continue;
            }
            let take = wanted.min(*open);
            *open -= take;
            wanted -= take;
            let position = match refunds.iter().position(|(touched, _, _)| *touched == index) {
                Some(position) => position,
                None => {
                    refunds.push((index, Vec::new(), 0));
                    refunds.len() - 1
                }
            };
            let (_, items, lines) = &mut refunds[position];
            match items.iter_mut().find(|(sku, _)| *sku == line.sku) {
                Some((_, quantity)) => *quantity += take,
                None => items.push((line.sku.clone(), take)),
            }
            if first_touch {
                *lines += 1;
                first_touch = false;
            }
        }
        if wanted == line.quantity {
            count(&mut plan.skipped, UNMATCHED, 1);
        } else if wanted > 0 {
            count(&mut plan.notes, PARTLY_MATCHED, 1);
        }
    }
    refunds
        .into_iter()
        .map(|(index, items, lines)| {
            let purchase = &bought[index].0;
            Op::Refund(RefundOp {
                key: format!("{KEY_PREFIX}{}:{purchase}", invoice.number),
                cancellation: invoice.number.clone(),
                purchase_key: format!("{KEY_PREFIX}{purchase}"),
                at: invoice.at,
                items,
                lines,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n";

    fn plan_of(body: &str) -> Plan {
        plan(&format!("{HEADER}{body}"), 2, &jiff::tz::TimeZone::UTC).expect("plans")
    }

    fn purchase(op: &Op) -> &PurchaseOp {
        match op {
            Op::Purchase(purchase) => purchase,
            Op::Refund(_) => panic!("a refund: {op:?}"),
        }
    }

    fn refund(op: &Op) -> &RefundOp {
        match op {
            Op::Refund(refund) => refund,
            Op::Purchase(_) => panic!("a purchase: {op:?}"),
        }
    }

    #[test]
    fn store_codes_come_from_country_names() {
        assert_eq!(store_code("United Kingdom"), "UNITED-KINGDOM");
        assert_eq!(store_code("EIRE"), "EIRE");
        assert_eq!(store_code(" Côte d'Ivoire "), "C-TE-D-IVOIRE");
        assert_eq!(store_code("---"), "UNSPECIFIED");
    }

    #[test]
    fn times_are_read_in_the_merchant_zone() {
        let london = jiff::tz::TimeZone::get("Europe/London").expect("tzdata");
        // 2011-06-01 10:00 BST is 09:00 UTC
        assert_eq!(
            parse_time("2011-06-01 10:00:00", &london),
            Some(1_306_918_800_000_000)
        );
        assert_eq!(
            parse_time("2011-06-01 09:00", &jiff::tz::TimeZone::UTC),
            Some(1_306_918_800_000_000)
        );
        assert_eq!(parse_time("2011-13-01 09:00:00", &london), None);
        assert_eq!(parse_time("yesterday", &london), None);
    }

    #[test]
    fn invoices_group_by_number_in_time_order_per_member() {
        let plan = plan_of(
            "2,A,\"Mug, blue\",1,2010-12-02 10:00:00,1.50,7,France\n\
             1,A,Mug,2,2010-12-01 10:00:00,1.50,7,France\n\
             1,B,,1,2010-12-01 10:01:00,2.005,7,France\n\
             2,B,Bowl,3,2010-12-02 10:00:00,0.004,7,France\n\
             3,A,Mug,1,2010-12-03 10:00:00,1.50,,United Kingdom\n",
        );
        assert_eq!(plan.lines_read, 5);
        assert_eq!((plan.invoices, plan.sales, plan.cancellations), (3, 3, 0));
        assert_eq!(plan.skipped[GUEST], 1);
        assert_eq!(plan.skipped[ZERO_PRICE], 1);
        assert_eq!(plan.notes[&rounded_note(2)], 2);
        assert_eq!(plan.members.len(), 1);
        let member = &plan.members[0];
        assert_eq!(member.external_id, "7");
        let first = purchase(&member.ops[0]);
        assert_eq!(first.external_id, "1");
        assert_eq!(first.key, "import:online-retail:1");
        assert_eq!(first.store_code, "FRANCE");
        assert_eq!(first.items.len(), 2);
        assert_eq!(
            first.items[1].unit_price, 201,
            "2.005 rounds half away from zero"
        );
        assert_eq!(first.items[1].name, None);
        let second = purchase(&member.ops[1]);
        assert_eq!(second.external_id, "2");
        assert_eq!(second.items[0].name.as_deref(), Some("Mug, blue"));
        assert_eq!(plan.stores.len(), 1, "no store for a guest-only country");
    }

    #[test]
    fn cancellations_refund_the_newest_earlier_purchases_first() {
        let plan = plan_of(
            "10,A,Mug,2,2010-12-01 10:00:00,1.00,7,France\n\
             11,A,Mug,3,2010-12-02 10:00:00,1.20,7,France\n\
             11,A,Mug,1,2010-12-02 10:00:00,1.20,7,France\n\
             11,B,Bowl,1,2010-12-02 10:00:00,5.00,7,France\n\
             C20,A,Mug,-5,2010-12-03 10:00:00,1.20,7,France\n\
             C20,B,Bowl,-2,2010-12-03 10:00:00,5.00,7,France\n\
             C20,Z,Zip,-1,2010-12-03 10:00:00,5.00,7,France\n\
             C05,A,Mug,-1,2010-11-30 10:00:00,1.20,7,France\n\
             12,A,Mug,1,2010-12-04 10:00:00,1.00,7,France\n\
             C21,A,Mug,-9,2010-12-05 10:00:00,1.00,7,France\n\
             C22,A,Mug,5,2010-12-05 10:00:00,1.00,7,France\n",
        );
        let ops = &plan.members[0].ops;
        let kinds: Vec<&str> = ops.iter().map(Op::key).collect();
        assert_eq!(
            kinds,
            [
                "import:online-retail:10",
                "import:online-retail:11",
                "import:online-retail:C20:11",
                "import:online-retail:C20:10",
                "import:online-retail:12",
                "import:online-retail:C21:12",
                "import:online-retail:C21:10",
            ]
        );
        // C20: 4 mugs of #11 (two lines of one sku), then 1 of #10; 1 bowl of 2 (partly)
        assert_eq!(
            refund(&ops[2]).items,
            [("A".to_string(), 4), ("B".to_string(), 1)]
        );
        assert_eq!(refund(&ops[2]).lines, 2);
        assert_eq!(refund(&ops[3]).items, [("A".to_string(), 1)]);
        assert_eq!(refund(&ops[3]).lines, 0);
        assert_eq!(refund(&ops[3]).purchase_key, "import:online-retail:10");
        // C21: the rest, 1 of #12 and 1 of #10 (#11 is used up); 7 beyond
        assert_eq!(refund(&ops[5]).items, [("A".to_string(), 1)]);
        assert_eq!(refund(&ops[6]).items, [("A".to_string(), 1)]);
        assert_eq!(plan.skipped[UNMATCHED], 2, "Z, and C05 before any purchase");
        assert_eq!(plan.skipped[POSITIVE_CANCELLATION], 1);
        assert_eq!(plan.notes[PARTLY_MATCHED], 2);
        assert_eq!(plan.cancellations, 4);
    }

    #[test]
    fn long_invoices_are_split_and_bad_lines_counted() {
        let mut body = String::new();
        for line in 0..1_001 {
            body.push_str(&format!(
                "99,S{line},Thing,1,2011-01-01 10:00:00,1.00,8,EIRE\n"
            ));
        }
        body.push_str("A1,X,Adjust,1,2011-01-01 10:00:00,1.00,8,EIRE\n");
        body.push_str("98,X,Thing,0,2011-01-01 10:00:00,1.00,8,EIRE\n");
        body.push_str("98,X,Thing,1,never,1.00,8,EIRE\n");
        body.push_str("98,X,Thing,many,2011-01-01 10:00:00,1.00,8,EIRE\n");
        body.push_str("98,X,Thing,1,2011-01-01 10:00:00,cheap,8,EIRE\n");
        body.push_str("98,X,Thing,2000000,2011-01-01 10:00:00,1.00,8,EIRE\n");
        body.push_str("98,X,Thing\n");
        body.push_str("99,S1,Thing,1,2011-01-01 10:00:00,1.00,9,EIRE\n");
        let plan = plan_of(&body);
        let parts: Vec<(&str, usize)> = plan.members[0]
            .ops
            .iter()
            .map(|op| (purchase(op).external_id.as_str(), purchase(op).items.len()))
            .collect();
        assert_eq!(parts, [("99", 500), ("99-2", 500), ("99-3", 1)]);
        assert_eq!(plan.notes[SPLIT], 1);
        assert_eq!(plan.skipped[OTHER_INVOICE], 1);
        assert_eq!(plan.skipped[ZERO_QUANTITY], 1);
        assert_eq!(plan.skipped[&malformed("InvoiceDate")], 1);
        assert_eq!(plan.skipped[&malformed("Quantity")], 1);
        assert_eq!(plan.skipped[&malformed("UnitPrice")], 1);
        assert_eq!(plan.skipped[&malformed("too few fields")], 1);
        assert_eq!(plan.skipped[HUGE_QUANTITY], 1);
        assert_eq!(plan.skipped[OTHER_CUSTOMER], 1);
        assert_eq!(plan.lines_read, 1_009);
        let planned: u64 = plan.ops().map(Op::lines).sum();
        assert_eq!(planned + plan.lines_skipped(), plan.lines_read);
    }

    #[test]
    fn a_file_without_the_columns_is_refused() {
        let error = plan("a,b\n1,2\n", 2, &jiff::tz::TimeZone::UTC).expect_err("refused");
        assert!(error.to_string().contains("InvoiceNo"), "{error}");
    }
}
