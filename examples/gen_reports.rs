//! Deterministic report generator for the benchmarks (`scripts/bench.sh`).
//!
//! ```text
//! gen_reports csv  --rows N --out FILE [--seed S] [--changed PERCENT]
//! gen_reports xlsx --rows N --out FILE [--seed S]
//! ```
//!
//! Activities `ACT-0000001..N` in shuffled order, the ~24 canonical columns with realistic
//! values (~450 bytes a row). Every value derives from the Activity's index, so two reports
//! with the same `--rows` agree on every Activity except those `--changed` picks: for those,
//! PERCENT % of the Activities, the state moves on and `updated_at` is a day later.

use std::io::{BufWriter, Write};

const HEADER: [&str; 25] = [
    "Activity ID",
    "Status",
    "Remote Activity ID",
    "Last Updated",
    "Submitted Date / Time",
    "Assigned To",
    "Requestor Name",
    "Requestor Email",
    "Ticket Type",
    "User Name",
    "Wireless Carrier",
    "Phone Number",
    "Device",
    "Plan",
    "Plan Costs",
    "Area Code",
    "Preferred Address",
    "Shipping Address",
    "Order Tracking URL",
    "Port / TOL information",
    "Existing Phone Number",
    "Account Number",
    "Name",
    "Transfer Notes",
    "Cost Center",
];

const STATES: [&str; 4] = ["Ordered", "On Back Order", "Completed", "Cancelled"];
const FIRST: [&str; 12] = [
    "Priya", "Marcus", "Hélène", "Tom", "Ana", "Grace", "Sam", "Lee", "Dana", "Omar", "Yuki",
    "Chen",
];
const LAST: [&str; 12] = [
    "Raman",
    "Oyelaran",
    "Dubois",
    "Becker",
    "Lima",
    "Okafor",
    "Ortiz",
    "Park",
    "Whitfield",
    "Haddad",
    "Sato",
    "Wei",
];
const DEVICES: [&str; 6] = [
    "Apple iPhone 17 128GB",
    "Apple iPhone 17 Pro 256GB",
    "Samsung Galaxy S26 256GB",
    "Google Pixel 10",
    "Apple iPad Air 11in",
    "Otterbox Defender case",
];
const TYPES: [&str; 6] = [
    "New Line",
    "Upgrade",
    "Port In",
    "Accessory Order",
    "Device Replacement",
    "Transfer of Liability",
];
const CARRIERS: [&str; 3] = ["Verizon Wireless", "AT&T Mobility", "T-Mobile"];
const PLANS: [&str; 3] = [
    "Business Unlimited Plus",
    "Business Unlimited Start",
    "Mobile Select Pooled 10GB",
];
const STREETS: [&str; 6] = [
    "Park Ave",
    "Main St",
    "Elm Rd",
    "Market St",
    "Harbor Blvd",
    "Lake Shore Dr",
];
const CITIES: [&str; 5] = [
    "New York, NY 10166",
    "Stamford, CT 06901",
    "Hoboken, NJ 07030",
    "Chicago, IL 60601",
    "Austin, TX 78701",
];

/// splitmix64: a good, tiny, deterministic mixer.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn pick<'a>(list: &[&'a str], h: u64) -> &'a str {
    list[(h % list.len() as u64) as usize]
}

/// The cells of Activity `i` (1-based); `changed` moves its state on by a day.
fn activity(i: u64, changed: bool) -> Vec<String> {
    let h = |salt: u64| mix(i.wrapping_mul(1_000_003) ^ salt);
    let base_state = (h(1) % 4) as usize;
    let state = if changed {
        (base_state + 1 + (h(2) % 3) as usize) % 4
    } else {
        base_state
    };
    // updated_at: within October 2026, a day later when changed.
    let minute = h(3) % (30 * 24 * 60);
    let (day, hh, mm) = (1 + minute / (24 * 60), (minute / 60) % 24, minute % 60);
    let updated = if changed {
        format!("2026-11-{:02}T{:02}:{:02}:00Z", day.min(28) + 1, hh, mm)
    } else {
        format!("2026-10-{day:02}T{hh:02}:{mm:02}:00Z")
    };
    let submitted = format!(
        "2026-09-{:02}T{:02}:{:02}:00Z",
        1 + h(4) % 28,
        h(5) % 24,
        h(6) % 60
    );
    let first = pick(&FIRST, h(7));
    let last = pick(&LAST, h(8));
    let user = format!("{first} {last}");
    let phone = format!("{}{:07}", 200 + h(9) % 800, h(10) % 10_000_000);
    let kind = pick(&TYPES, h(11));
    let port = if kind == "Port In" {
        format!(
            "Port from {}, account {}-{}",
            pick(&CARRIERS, h(12)),
            h(13) % 10_000,
            h(14) % 100
        )
    } else {
        String::new()
    };
    let street = format!("{} {}", 1 + h(15) % 999, pick(&STREETS, h(16)));
    let city = pick(&CITIES, h(17));
    let tracking = if state == 2 {
        format!(
            "https://www.fedex.com/fedextrack/?trknbr={:012}",
            h(18) % 1_000_000_000_000
        )
    } else {
        String::new()
    };
    vec![
        format!("ACT-{i:07}"),
        STATES[state].to_string(),
        format!("RITM{:07}", 10_000 + i),
        updated,
        submitted,
        "Tangoe Fulfillment Team".to_string(),
        "Dana Whitfield".to_string(),
        format!(
            "{}.{}@acme.example",
            first.to_lowercase(),
            last.to_lowercase()
        ),
        kind.to_string(),
        user.clone(),
        pick(&CARRIERS, h(19)).to_string(),
        phone.clone(),
        pick(&DEVICES, h(20)).to_string(),
        pick(&PLANS, h(21)).to_string(),
        format!("${}.{:02}/mo", 20 + h(22) % 80, h(23) % 100),
        phone[..3].to_string(),
        format!("{street}, {city}"),
        format!("{user}\n{street}, Floor {}\n{city}", 1 + h(24) % 40),
        tracking,
        port,
        if kind == "Port In" {
            phone.clone()
        } else {
            String::new()
        },
        format!("{:010}-{:05}", h(25) % 10_000_000_000, h(26) % 100_000),
        user,
        if h(27) % 4 == 0 {
            "Deliver to mailroom; call on arrival".to_string()
        } else {
            String::new()
        },
        format!("CC-{}", 1000 + h(28) % 9000),
    ]
}

/// A permutation of 1..=n (Fisher-Yates with the mixer).
fn shuffled(n: u64, seed: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (1..=n).collect();
    for k in (1..v.len()).rev() {
        let j = (mix(seed ^ k as u64) % (k as u64 + 1)) as usize;
        v.swap(k, j);
    }
    v
}

fn is_changed(i: u64, percent: u64, seed: u64) -> bool {
    percent > 0 && mix(i ^ seed.rotate_left(17) ^ 0xC4A7) % 100 < percent
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|p| args.get(p + 1))
            .cloned()
    };
    let format = args.get(1).cloned().unwrap_or_default();
    let rows: u64 = get("--rows")
        .and_then(|v| v.parse().ok())
        .expect("--rows N");
    let out = get("--out").expect("--out FILE");
    let seed: u64 = get("--seed").and_then(|v| v.parse().ok()).unwrap_or(1);
    let changed: u64 = get("--changed").and_then(|v| v.parse().ok()).unwrap_or(0);
    let order = shuffled(rows, seed);
    match format.as_str() {
        "csv" => {
            let f = std::fs::File::create(&out).expect("create --out");
            let mut w = csv::WriterBuilder::new().from_writer(BufWriter::with_capacity(1 << 20, f));
            w.write_record(HEADER).unwrap();
            for &i in &order {
                w.write_record(activity(i, is_changed(i, changed, seed)))
                    .unwrap();
            }
            w.into_inner().unwrap().flush().unwrap();
        }
        "xlsx" => {
            use rust_xlsxwriter::Workbook;
            let mut wb = Workbook::new();
            let ws = wb.add_worksheet();
            ws.set_name("Activity Report").unwrap();
            for (c, h) in HEADER.iter().enumerate() {
                ws.write_string(0, c as u16, *h).unwrap();
            }
            for (r, &i) in order.iter().enumerate() {
                for (c, v) in activity(i, is_changed(i, changed, seed)).iter().enumerate() {
                    if v.is_empty() {
                        continue;
                    }
                    // Phone numbers as spreadsheet numbers, the way Excel keeps them.
                    if (c == 11 || c == 20) && v.bytes().all(|b| b.is_ascii_digit()) {
                        ws.write_number(1 + r as u32, c as u16, v.parse::<f64>().unwrap())
                            .unwrap();
                    } else {
                        ws.write_string(1 + r as u32, c as u16, v).unwrap();
                    }
                }
            }
            wb.save(&out).unwrap();
        }
        other => panic!("unknown format {other:?}: csv or xlsx"),
    }
}
