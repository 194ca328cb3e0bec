//! Header matching: the input's lines are rows, its tabs separate cells.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let rows: Vec<Vec<String>> = text
        .split('\n')
        .map(|line| line.split('\t').map(str::to_string).collect())
        .collect();
    tangoe_ingest::fuzzing::find_header(&rows);
});
