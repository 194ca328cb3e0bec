//! The benchmark floor: the least work any tool must do to read a report.
//!
//! ```text
//! floor csv FILE    # the csv crate counting records (ByteRecord, reused)
//! floor xlsx FILE   # calamine streaming every cell of the first sheet
//! floor sha256 FILE # SHA-256 of the file (what any run spends to recognise a duplicate)
//! ```

use std::io::BufReader;

use calamine::{Reader, Xlsx};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (kind, path) = (args.get(1).expect("csv|xlsx"), args.get(2).expect("FILE"));
    match kind.as_str() {
        "csv" => {
            let mut r = csv::ReaderBuilder::new()
                .has_headers(false)
                .from_path(path)
                .unwrap();
            let mut rec = csv::ByteRecord::new();
            let mut n = 0u64;
            while r.read_byte_record(&mut rec).unwrap() {
                n += 1;
            }
            println!("{n} records");
        }
        "xlsx" => {
            let mut wb: Xlsx<_> =
                Xlsx::new(BufReader::new(std::fs::File::open(path).unwrap())).unwrap();
            let sheet = wb.sheet_names()[0].clone();
            let mut cells = wb.worksheet_cells_reader(&sheet).unwrap();
            let mut n = 0u64;
            while let Some(c) = cells.next_cell().unwrap() {
                if !matches!(c.get_value(), calamine::DataRef::Empty) {
                    n += 1;
                }
            }
            println!("{n} cells");
        }
        "sha256" => {
            use sha2::{Digest, Sha256};
            use std::io::Read;
            let mut f = std::fs::File::open(path).unwrap();
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            println!("{}", hex::encode(h.finalize()));
        }
        other => panic!("unknown kind {other:?}"),
    }
}
