//! A real HTTP/1.1 server on 127.0.0.1:0 inside the test process: it records every request
//! and answers as the test's script says — any status and body, `Retry-After`, hang past
//! the client's timeout, or drop the connection without a word.
//!
//! Written on `std::net` rather than tiny_http because tiny_http cannot close a connection
//! without answering (a dropped request still gets a 500), and dropping is one of the
//! behaviours under test. Every connection gets one answer and is closed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A request as the server received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// A query parameter, percent-decoded.
    pub fn query(&self, key: &str) -> Option<String> {
        let q = self.target.split_once('?')?.1;
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| decode(v))
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    pub fn key(&self) -> String {
        self.header("X-Idempotency-Key").unwrap_or("").to_string()
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What to do with a request.
pub enum Reply {
    /// Status, extra headers, JSON body.
    Send(u16, Vec<(&'static str, String)>, String),
    /// Wait this long, then close without answering.
    Hang(Duration),
    /// Close the connection at once without answering.
    Drop,
    /// This status, a body announced as 100 bytes, 5 of them sent, then the connection closed.
    CutOff(u16),
}

impl Reply {
    pub fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply::Send(status, Vec::new(), body.to_string())
    }
}

type Script = Box<dyn FnMut(&Recorded, usize) -> Reply + Send>;

pub struct Server {
    port: u16,
    requests: Arc<Mutex<Vec<Recorded>>>,
    script: Arc<Mutex<Script>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    /// Starts a server; `script(request, index)` decides each answer (index counts from 0
    /// over the server's life).
    pub fn start(script: impl FnMut(&Recorded, usize) -> Reply + Send + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let s = Server {
            port,
            requests: Arc::new(Mutex::new(Vec::new())),
            script: Arc::new(Mutex::new(Box::new(script))),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (requests, script, stop) = (s.requests.clone(), s.script.clone(), s.stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (requests, script) = (requests.clone(), script.clone());
                std::thread::spawn(move || handle(conn, &requests, &script));
            }
        });
        s
    }

    /// Answers 2xx with an Import Set row `inserted` to everything.
    pub fn ok() -> Server {
        Server::start(|_, _| import_ok())
    }

    /// A base URL with `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Replaces the script (e.g. the ITSM is back up).
    pub fn set(&self, script: impl FnMut(&Recorded, usize) -> Reply + Send + 'static) {
        *self.script.lock().unwrap() = Box::new(script);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// ServiceNow's answer to an Import Set row that went in.
pub fn import_ok() -> Reply {
    Reply::json(
        201,
        serde_json::json!({"import_set": "ISET0010001", "staging_table": "u_tangoe_activity",
            "result": [{"transform_map": "Tangoe", "table": "sc_req_item", "status": "updated", "sys_id": "abc"}]}),
    )
}

fn handle(mut conn: TcpStream, requests: &Mutex<Vec<Recorded>>, script: &Mutex<Script>) {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let Some(rec) = read_request(&conn) else {
        return;
    };
    let index = {
        let mut r = requests.lock().unwrap();
        r.push(rec.clone());
        r.len() - 1
    };
    let reply = (script.lock().unwrap())(&rec, index);
    match reply {
        Reply::Drop => {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
        Reply::Hang(d) => {
            std::thread::sleep(d);
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
        Reply::CutOff(status) => {
            let head = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{\"res"
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.flush();
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
        Reply::Send(status, headers, body) => {
            let mut head = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(body.as_bytes());
            let _ = conn.flush();
        }
    }
}

fn read_request(conn: &TcpStream) -> Option<Recorded> {
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if let Some(n) = find("content-length") {
        let n: usize = n.parse().ok()?;
        body.resize(n, 0);
        r.read_exact(&mut body).ok()?;
    } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    Some(Recorded {
        method,
        target,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
    })
}
