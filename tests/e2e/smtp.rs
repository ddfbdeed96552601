//! A real SMTP server for the email sink: Python's aiosmtpd (`scripts/test-deps.sh`)
//! writing every accepted message to a Maildir, optionally requiring AUTH.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use base64::Engine;

use crate::harness::free_port;

/// The server: aiosmtpd's `Controller` with the `Mailbox` handler. It also
/// stops by itself when its stdin closes (the test process went away).
const SERVER: &str = r#"
import sys
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword

port, maildir, log = int(sys.argv[1]), sys.argv[2], sys.argv[3]
user = sys.argv[4].encode() if len(sys.argv) > 4 else None
password = sys.argv[5].encode() if len(sys.argv) > 5 else None

def authenticator(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and data.login == user and data.password == password
    with open(log, "a") as f:
        f.write(f"auth {mechanism} {data.login.decode() if isinstance(data, LoginPassword) else '?'} {'ok' if ok else 'refused'}\n")
    return AuthResult(success=ok)

options = {}
if user is not None:
    options = dict(authenticator=authenticator, auth_required=True, auth_require_tls=False)
controller = Controller(Mailbox(maildir), hostname="127.0.0.1", port=port, **options)
controller.start()
print("ready", flush=True)
sys.stdin.read()
controller.stop()
"#;

pub struct SmtpServer {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

/// One message as stored in the Maildir.
#[derive(Debug, Clone)]
pub struct Mail {
    /// Header names lower-cased, folded lines joined.
    pub headers: Vec<(String, String)>,
    /// The body, transfer encoding undone.
    pub body: String,
}

impl Mail {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn parse(raw: &str) -> Mail {
        let raw = raw.replace("\r\n", "\n");
        let (head, body) = raw.split_once("\n\n").unwrap_or((raw.as_str(), ""));
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.lines() {
            if line.starts_with([' ', '\t']) {
                if let Some((_, value)) = headers.last_mut() {
                    value.push(' ');
                    value.push_str(line.trim());
                }
            } else if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
        }
        let encoding = headers
            .iter()
            .find(|(k, _)| k == "content-transfer-encoding")
            .map(|(_, v)| v.to_ascii_lowercase())
            .unwrap_or_default();
        let body = match encoding.as_str() {
            "quoted-printable" => quoted_printable(body),
            "base64" => {
                let compact: String = body.split_whitespace().collect();
                String::from_utf8(base64::engine::general_purpose::STANDARD.decode(compact).expect("base64 body"))
                    .expect("utf-8 body")
            }
            _ => body.to_string(),
        };
        Mail { headers, body }
    }
}

fn quoted_printable(text: &str) -> String {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'=' if bytes.get(i + 1) == Some(&b'\n') => i += 2,
            b'=' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).expect("quoted-printable escape"));
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).expect("utf-8 body")
}

impl SmtpServer {
    /// Starts the server on a free port; with `auth`, every session must log in with that user and password.
    pub fn start(auth: Option<(&str, &str)>) -> SmtpServer {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("smtpd.py");
        std::fs::write(&script, SERVER).unwrap();
        let port = free_port();
        let mut command = Command::new("python3");
        command.arg(&script).arg(port.to_string()).arg(dir.path().join("maildir")).arg(dir.path().join("auth.log"));
        if let Some((user, password)) = auth {
            command.args([user, password]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 (run scripts/test-deps.sh for aiosmtpd)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "aiosmtpd did not start (is it installed? scripts/test-deps.sh)");
        SmtpServer { child, port, dir }
    }

    fn new_dir(&self) -> PathBuf {
        self.dir.path().join("maildir").join("new")
    }

    /// The messages delivered so far, oldest first.
    pub fn messages(&self) -> Vec<Mail> {
        let mut files: Vec<_> = std::fs::read_dir(self.new_dir())
            .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        files.iter().map(|p| Mail::parse(&std::fs::read_to_string(p).unwrap())).collect()
    }

    /// The authenticator's log: one line per AUTH attempt.
    pub fn auth_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("auth.log")).unwrap_or_default()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn quoted_printable_is_undone() {
    let mail = Mail::parse(
        "Subject: a\n long one\nContent-Transfer-Encoding: quoted-printable\n\nlast error: HTTP 410=3A gone=\n and more\n",
    );
    assert_eq!(mail.header("subject"), Some("a long one"));
    assert_eq!(mail.body, "last error: HTTP 410: gone and more\n");
}
