//! Commands with a module of their own: each builds its options, calls the library and
//! prints; exit codes are decided in `app`.

pub mod rejects;
pub mod reports;
