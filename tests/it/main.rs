//! The integration suite: the real binary, in temp dirs, against real files and a real
//! SQLite ledger. One test binary for the whole suite.

mod server;
mod sshd;
mod support;
mod tangoe;

mod api;
mod check;
mod crash;
mod dedupe;
mod edge_cases;
mod exit_codes;
mod fuzzed;
mod hostile;
mod html_audit;
mod http_sink;
mod names;
mod operator;
mod oracle;
mod parsing;
mod progress;
mod rejects;
mod reliability;
mod runs;
mod sftp;
mod status;
