//! Writes `sample_reports/`: a few days of realistic Tangoe activity reports (CSV and XLSX)
//! with the quirks real ones have. Deterministic; run with
//! `cargo run --example make_samples` and commit the result.

use std::path::Path;

use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};

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

/// One activity row of a sample report.
struct Row {
    id: &'static str,
    status: &'static str,
    ritm: &'static str,
    updated: &'static str,
    submitted: &'static str,
    user: &'static str,
    kind: &'static str,
    phone: &'static str,
    device: &'static str,
    plan: &'static str,
    cost: &'static str,
    shipping: &'static str,
    tracking: &'static str,
    port: &'static str,
    existing: &'static str,
    account: &'static str,
    notes: &'static str,
    cc: &'static str,
}

impl Row {
    fn cells(&self) -> Vec<String> {
        let area = if self.phone.len() >= 3 {
            &self.phone[..3]
        } else {
            ""
        };
        vec![
            self.id,
            self.status,
            self.ritm,
            self.updated,
            self.submitted,
            "Tangoe Fulfillment Team",
            "Dana Whitfield",
            "dana.whitfield@acme.example",
            self.kind,
            self.user,
            "Verizon Wireless",
            self.phone,
            self.device,
            self.plan,
            self.cost,
            area,
            "200 Park Ave, New York, NY 10166",
            self.shipping,
            self.tracking,
            self.port,
            self.existing,
            self.account,
            self.user,
            self.notes,
            self.cc,
        ]
        .into_iter()
        .map(str::to_string)
        .collect()
    }
}

const BASE: Row = Row {
    id: "",
    status: "",
    ritm: "",
    updated: "",
    submitted: "",
    user: "",
    kind: "New Line",
    phone: "",
    device: "Apple iPhone 17 128GB",
    plan: "Business Unlimited Plus",
    cost: "$45.00/mo",
    shipping: "",
    tracking: "",
    port: "",
    existing: "",
    account: "0842199310-00001",
    notes: "",
    cc: "CC-4410",
};

fn csv_line(cells: &[String]) -> String {
    cells
        .iter()
        .map(|c| {
            if c.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                c.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn write_csv(dir: &Path, name: &str, preamble: &[&str], rows: &[Vec<String>], footer: &[&str]) {
    let mut s = String::from("\u{feff}");
    for p in preamble {
        s.push_str(p);
        s.push_str("\r\n");
    }
    s.push_str(&csv_line(
        &HEADER.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
    ));
    s.push_str("\r\n");
    for r in rows {
        s.push_str(&csv_line(r));
        s.push_str("\r\n");
    }
    for f in footer {
        s.push_str(f);
        s.push_str("\r\n");
    }
    std::fs::write(dir.join(name), s).unwrap();
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample_reports");
    std::fs::create_dir_all(&dir).unwrap();

    // Day 1: a scheduled CSV with a BOM, a preamble, a multi-line address, a bad row, a footer.
    let a201 = Row {
        id: "ACT-100201",
        status: "Ordered",
        ritm: "RITM0010231",
        updated: "11/01/2026 09:15 AM",
        submitted: "10/31/2026 04:42 PM",
        user: "Priya Raman",
        kind: "Upgrade",
        phone: "2125550147",
        shipping: "Priya Raman\n200 Park Ave, Floor 14\nNew York, NY 10166",
        ..BASE
    };
    let a202 = Row {
        id: "ACT-100202",
        status: "On Back Order",
        ritm: "RITM0010232",
        updated: "11/01/2026 11:02 AM",
        submitted: "10/30/2026 10:05 AM",
        user: "Marcus Oyelaran",
        device: "Samsung Galaxy S26 256GB",
        phone: "6465550199",
        shipping: "1 Main St, Stamford, CT 06901",
        notes: "Colour Phantom Black backordered at carrier",
        ..BASE
    };
    let a203 = Row {
        id: "ACT-100203",
        status: "Ordered",
        ritm: "RITM0010233",
        updated: "11/01/2026 02:30 PM",
        submitted: "11/01/2026 01:10 PM",
        user: "Hélène Dubois",
        kind: "Port In",
        phone: "9175550123",
        port: "Port from AT&T, account 4431-22, PIN on file",
        existing: "9175550123",
        shipping: "Remote worker, 14 Elm Rd, Hoboken, NJ 07030",
        ..BASE
    };
    let a204 = Row {
        id: "ACT-100204",
        status: "Order Placed",
        ritm: "RITM0010234",
        updated: "11/01/2026 03:45 PM",
        submitted: "11/01/2026 03:40 PM",
        user: "Tom Becker",
        kind: "Accessory Order",
        device: "Otterbox Defender case",
        plan: "",
        cost: "$49.99",
        ..BASE
    };
    let a205 = Row {
        id: "ACT-100205",
        status: "Ordered",
        ritm: "",
        updated: "11/01/2026 05:20 PM",
        submitted: "11/01/2026 05:18 PM",
        user: "Ana Lima",
        kind: "New Line",
        phone: "",
        shipping: "200 Park Ave, Mailroom, New York, NY 10166",
        ..BASE
    };
    let bad206 = Row {
        id: "ACT-100206",
        status: "Shipped",
        ritm: "RITM0010236",
        updated: "11/01/2026 06:00 PM",
        submitted: "11/01/2026 05:55 PM",
        user: "Lee Park",
        ..BASE
    };
    write_csv(
        &dir,
        "tangoe_activity_report_2026-11-02.csv",
        &[
            "Tangoe Mobile - Activity Report",
            "Filters: Status in (Ordered; On Back Order; Completed; Cancelled); Updated in last 24 hours",
            "Run date: 11/02/2026 06:00 AM",
            "",
        ],
        &[
            a201.cells(),
            a202.cells(),
            a203.cells(),
            a204.cells(),
            a205.cells(),
            bad206.cells(),
        ],
        &["", "Generated by Tangoe Mobile on 11/02/2026 06:00 AM"],
    );

    // Day 2: someone exported from the portal to Excel: typed dates, phone numbers as numbers,
    // a duplicate row, a cancellation, a bad date.
    let a201c = Row {
        status: "Completed",
        updated: "2026-11-02 14:05:00",
        tracking: "https://www.fedex.com/fedextrack/?trknbr=771234567890",
        ..a201
    };
    let a204x = Row {
        status: "Canceled",
        updated: "2026-11-02 09:12:00",
        notes: "Requester cancelled: duplicate order",
        ..a204
    };
    let a207 = Row {
        id: "ACT-100207",
        status: "Ordered",
        ritm: "RITM0010237",
        updated: "2026-11-02 16:40:00",
        submitted: "2026-11-02 16:35:00",
        user: "Grace Okafor",
        kind: "Device Replacement",
        phone: "3475550111",
        device: "Google Pixel 10",
        shipping: "200 Park Ave, New York, NY 10166",
        ..BASE
    };
    let bad208 = Row {
        id: "ACT-100208",
        status: "Ordered",
        ritm: "RITM0010238",
        updated: "13/45/2026",
        submitted: "",
        user: "Sam Ortiz",
        ..BASE
    };
    let a202u = Row {
        updated: "2026-11-01 11:02:00",
        ..a202
    };
    let a203u = Row {
        updated: "2026-11-01 14:30:00",
        ..a203
    };
    let day2 = [&a201c, &a202u, &a203u, &a203u, &a204x, &a207, &bad208];
    write_xlsx(&dir.join("tangoe_activity_report_2026-11-03.xlsx"), &day2);

    // Day 3: the back order completes, the port-in completes, a new back order, a row without ID.
    let a202c = Row {
        status: "Completed",
        updated: "11/03/2026 10:30 AM",
        tracking: "https://www.ups.com/track?tracknum=1Z999AA10123456784",
        notes: "Shipped from alternate warehouse",
        ..a202
    };
    let a203c = Row {
        status: "Completed",
        updated: "11/03/2026 12:00 PM",
        ..a203
    };
    let a207b = Row {
        status: "Backordered",
        updated: "11/03/2026 08:00 AM",
        notes: "Carrier allocation delayed",
        ..a207
    };
    let noid = Row {
        id: "",
        status: "Completed",
        updated: "11/03/2026 01:00 PM",
        user: "Unknown",
        ..BASE
    };
    let a205u = Row { ..a205 };
    write_csv(
        &dir,
        "tangoe_activity_report_2026-11-04.csv",
        &[
            "Tangoe Mobile - Activity Report",
            "Run date: 11/04/2026 06:00 AM",
        ],
        &[
            a202c.cells(),
            a203c.cells(),
            a207b.cells(),
            noid.cells(),
            a205u.cells(),
        ],
        &["Total: 5 activities"],
    );

    // A late copy of the day-1 report, dropped after the newer ones: every row is older than
    // what the ledger knows, so nothing regresses.
    write_csv(
        &dir,
        "tangoe_activity_report_2026-11-05_late-copy.csv",
        &["Tangoe Mobile - Activity Report (saved 11/01/2026)"],
        &[Row { ..a201 }.cells(), Row { ..a202 }.cells()],
        &[],
    );
}

fn write_xlsx(path: &Path, rows: &[&Row]) {
    let mut wb = Workbook::new();
    let ws = wb.add_worksheet();
    ws.set_name("Activity Report").unwrap();
    let bold = Format::new().set_bold();
    let date_fmt = Format::new().set_num_format("mm/dd/yyyy hh:mm");
    ws.write_string(
        0,
        0,
        "Tangoe Mobile - Activity Report (exported 11/03/2026)",
    )
    .unwrap();
    for (c, h) in HEADER.iter().enumerate() {
        ws.write_string_with_format(2, c as u16, *h, &bold).unwrap();
    }
    for (i, row) in rows.iter().enumerate() {
        let r = 3 + i as u32;
        for (c, v) in row.cells().iter().enumerate() {
            let c = c as u16;
            if v.is_empty() {
                continue;
            }
            let header = HEADER[c as usize];
            let as_date = (header == "Last Updated" || header == "Submitted Date / Time")
                && v.len() == 19
                && v.as_bytes()[4] == b'-';
            if as_date {
                let dt = ExcelDateTime::parse_from_str(v).unwrap();
                ws.write_datetime_with_format(r, c, &dt, &date_fmt).unwrap();
            } else if (header == "Phone Number"
                || header == "Existing Phone Number"
                || header == "Area Code")
                && v.bytes().all(|b| b.is_ascii_digit())
            {
                ws.write_number(r, c, v.parse::<f64>().unwrap()).unwrap();
            } else {
                ws.write_string(r, c, v).unwrap();
            }
        }
    }
    wb.save(path).unwrap();
}
