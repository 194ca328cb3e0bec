//! A fake Tangoe API on 127.0.0.1 (on the suite's `server.rs`) for the API source's
//! tests: `GET /1/activities` filtered by its `updated_at` dates and paged as Tangoe
//! documents, `POST /v2/token` issuing short-lived tokens it then checks, and faults a test
//! injects per page (429, 500, a cut-off body, a stall).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::server::{Recorded, Reply, Server};
use crate::support::Case;

/// A record of `GET /1/activities`: Activity `id` in `state`, updated at `at` (RFC 3339).
pub fn rec(id: &str, state: &str, at: &str) -> Value {
    json!({"id": id, "state": state, "updated_at": at, "remote_activity_id": format!("RITM{id}")})
}

/// A fault the test injects: given a request of `GET /1/activities` (its page, and how
/// many times that page was asked before), an answer in place of the page's.
type Fault = Box<dyn FnMut(u32, usize) -> Option<Reply> + Send>;

#[derive(Default)]
struct State {
    records: Vec<Value>,
    /// `client_credentials`: how long an issued token lives (none: `api_token` is expected).
    token_life: Option<Duration>,
    tokens: HashMap<String, Instant>,
    /// Requests that carried a missing, wrong or expired credential.
    refused: usize,
    fault: Option<Fault>,
    asked: HashMap<u32, usize>,
}

/// The fake API: the records it holds, filtered and paged as Tangoe documents.
pub struct Tangoe {
    pub server: Server,
    state: Arc<Mutex<State>>,
}

impl Tangoe {
    pub fn start() -> Tangoe {
        let state = Arc::new(Mutex::new(State::default()));
        let s = state.clone();
        let server = Server::start(move |req, _| answer(&mut s.lock().unwrap(), req));
        Tangoe { server, state }
    }

    pub fn records(&self, records: Vec<Value>) -> &Tangoe {
        self.state.lock().unwrap().records = records;
        self
    }

    pub fn fault(&self, f: impl FnMut(u32, usize) -> Option<Reply> + Send + 'static) -> &Tangoe {
        let mut s = self.state.lock().unwrap();
        s.fault = Some(Box::new(f));
        s.asked.clear();
        self
    }

    pub fn no_fault(&self) -> &Tangoe {
        self.state.lock().unwrap().fault = None;
        self
    }

    pub fn token_life(&self, life: Duration) -> &Tangoe {
        self.state.lock().unwrap().token_life = Some(life);
        self
    }

    pub fn refused(&self) -> usize {
        self.state.lock().unwrap().refused
    }

    /// The requests for pages, in order.
    pub fn pages(&self) -> Vec<Recorded> {
        self.server
            .requests()
            .into_iter()
            .filter(|r| r.path() == "/1/activities")
            .collect()
    }

    /// The `updated_at_gte` of each request for page 1 (`""`: none), one per pull.
    pub fn pulls_from(&self) -> Vec<String> {
        self.pages()
            .iter()
            .filter(|r| r.query("page").as_deref() == Some("1"))
            .map(|r| r.query("updated_at_gte").unwrap_or_default())
            .collect()
    }

    /// A configuration pulling from this API with an API token, and `extra` keys in
    /// `[source]`.
    pub fn config(&self, extra: &str) -> String {
        format!(
            r#"[source]
type = "tangoe_api"
base_url = "{}"
auth = "api_token"
api_token_env = "TANGOE_TOKEN"
rate_limit = "100/s"
timeout = "5s"
{extra}

[ledger]
path = "state/ledger.sqlite"

[[sink]]
type = "file"
dir = "out"
format = "jsonl"
"#,
            self.server.url("")
        )
    }

    /// A case pulling from this API logging in with `client_credentials` (client secret
    /// `s3cret`, from a file), at `rate_limit`, with `extra` keys in `[source]`.
    pub fn client_credentials_case(&self, rate_limit: &str, extra: &str) -> Case {
        let c = self.case("");
        c.config(&self.config(extra).replace(
            "auth = \"api_token\"\napi_token_env = \"TANGOE_TOKEN\"\nrate_limit = \"100/s\"",
            &format!(
                "auth = \"client_credentials\"\nclient_id = \"cid\"\n\
                 client_secret_file = \"secret.txt\"\nsubject = \"svc@example.com\"\n\
                 rate_limit = \"{rate_limit}\""
            ),
        ));
        c.file("secret.txt", "s3cret\n");
        c
    }

    /// A case pulling from this API (`extra` keys in `[source]`).
    pub fn case(&self, extra: &str) -> Case {
        let c = Case::new();
        c.config(&self.config(extra))
            .env("TANGOE_TOKEN", "tok-1")
            .env("TANGOE_INGEST_HTTP_BACKOFF", "20ms")
            .timeout(Duration::from_secs(60));
        c
    }
}

fn answer(s: &mut State, req: &Recorded) -> Reply {
    match (req.method.as_str(), req.path()) {
        ("POST", "/v2/token") => issue_token(s, req),
        ("GET", "/1/activities") => {
            if !authorized(s, req) {
                s.refused += 1;
                return Reply::json(401, json!({"error": "unauthorized"}));
            }
            let page: u32 = req.query("page").and_then(|p| p.parse().ok()).unwrap_or(1);
            let asked = s.asked.entry(page).or_default();
            let before = *asked;
            *asked += 1;
            if let Some(f) = s.fault.as_mut()
                && let Some(reply) = f(page, before)
            {
                return reply;
            }
            Reply::json(200, Value::Array(page_of(&s.records, req, page)))
        }
        _ => Reply::json(404, json!({"error": "no such endpoint"})),
    }
}

/// The records `req` asks for: its `updated_at` window (dates), then its page.
fn page_of(records: &[Value], req: &Recorded, page: u32) -> Vec<Value> {
    let per_page: usize = req
        .query("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(100);
    let (gte, lte) = (req.query("updated_at_gte"), req.query("updated_at_lte"));
    let day = |r: &Value| r["updated_at"].as_str().unwrap_or("")[..10].to_string();
    records
        .iter()
        .filter(|r| gte.as_ref().is_none_or(|g| day(r) >= *g))
        .filter(|r| lte.as_ref().is_none_or(|l| day(r) <= *l))
        .skip((page as usize - 1) * per_page)
        .take(per_page)
        .cloned()
        .collect()
}

fn authorized(s: &State, req: &Recorded) -> bool {
    match s.token_life {
        None => req.header("API-Token") == Some("tok-1"),
        Some(_) => req
            .header("Authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
            .and_then(|t| s.tokens.get(t))
            .is_some_and(|expires| Instant::now() < *expires),
    }
}

fn issue_token(s: &mut State, req: &Recorded) -> Reply {
    let body = req.json();
    let ok = body["client_id"] == "cid"
        && body["client_secret"] == "s3cret"
        && body["subject"] == "svc@example.com"
        && body["grant_type"] == "client_credentials";
    let Some(life) = s.token_life.filter(|_| ok) else {
        return Reply::json(401, json!({"error": "invalid_client"}));
    };
    let token = format!("jwt-{}", s.tokens.len() + 1);
    s.tokens.insert(token.clone(), Instant::now() + life);
    let expires_at = chrono::Utc::now() + chrono::Duration::from_std(life).unwrap();
    Reply::json(
        200,
        json!({"access_token": token, "token_type": "bearer",
               "expires_at": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
               "audience": "x", "scope": "activities"}),
    )
}

/// `n` records A1..An, ordered, updated a minute apart from 2026-12-01T10:00:00Z.
pub fn many(n: usize) -> Vec<Value> {
    (1..=n)
        .map(|i| {
            rec(
                &format!("A{i}"),
                "ordered",
                &format!("2026-12-01T10:{i:02}:00Z"),
            )
        })
        .collect()
}
