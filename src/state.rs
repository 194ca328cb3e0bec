//! The four Tangoe states that matter to the client, as the ledger stores them.
//!
//! A leaf module: everything may use it; it uses nothing of the crate.

use std::fmt;

/// The four Tangoe states that trigger an update to the client's ITSM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum State {
    Ordered,
    OnBackOrder,
    Completed,
    Cancelled,
}

impl State {
    pub(crate) const ALL: [State; 4] = [
        State::Ordered,
        State::OnBackOrder,
        State::Completed,
        State::Cancelled,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            State::Ordered => "ordered",
            State::OnBackOrder => "on_back_order",
            State::Completed => "completed",
            State::Cancelled => "cancelled",
        }
    }

    /// The code stored in the ledger.
    pub(crate) fn code(self) -> i64 {
        match self {
            State::Ordered => 1,
            State::OnBackOrder => 2,
            State::Completed => 3,
            State::Cancelled => 4,
        }
    }

    pub(crate) fn from_code(code: i64) -> Option<State> {
        State::ALL.into_iter().find(|s| s.code() == code)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
