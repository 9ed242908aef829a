//! Headless Chromium (Debian's `chromium`) driven over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: requests on fd 3, answers and events on fd 4, each message
//! JSON ended by a NUL), for tests of the dashboard in a real browser: open a page, run
//! script in it, wait for what it renders. Blocking: call it from `spawn_blocking`.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// No single protocol call takes longer.
const CALL_LIMIT: Duration = Duration::from_secs(30);

pub struct Browser {
    child: Child,
    requests: std::io::PipeWriter,
    answers: mpsc::Receiver<Value>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

/// A page (tab) of the browser, attached in a session of its own.
pub struct Page<'a> {
    browser: &'a mut Browser,
    session: String,
}

impl Browser {
    /// Starts Chromium headless with a fresh profile and nothing that calls out.
    pub fn launch() -> anyhow::Result<Browser> {
        let profile = tempfile::tempdir()?;
        let (to_browser_read, to_browser_write) = std::io::pipe()?;
        let (from_browser_read, from_browser_write) = std::io::pipe()?;
        // Above fd 4, so that placing one end on 3 or 4 in the child never clobbers the other.
        let above_4 = |fd: OwnedFd| -> std::io::Result<OwnedFd> {
            // SAFETY: fcntl duplicates a descriptor we own; the copy is owned once checked.
            let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 5) };
            if copy < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: `copy` is a fresh descriptor nothing else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(copy) })
        };
        let (child_in, child_out) = (above_4(to_browser_read.into())?, above_4(from_browser_write.into())?);
        let (in_fd, out_fd) = (child_in.as_raw_fd(), child_out.as_raw_fd());
        let mut command = Command::new("chromium");
        command
            .args(["--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu", "--no-first-run"])
            .args(["--disable-quic", "--disable-background-networking", "--disable-component-update"])
            .args(["--disable-sync", "--window-size=1400,1300"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: between fork and exec only dup2, which is async-signal-safe, runs.
        unsafe {
            command.pre_exec(move || {
                for (from, to) in [(in_fd, 3), (out_fd, 4)] {
                    if libc::dup2(from, to) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = command.spawn().context("starting chromium (deploy/local/setup.sh installs it)")?;
        drop((child_in, child_out));
        let (sender, answers) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(from_browser_read);
            let mut message = Vec::new();
            while reader.read_until(0, &mut message).is_ok_and(|n| n > 0) {
                message.pop_if(|b| *b == 0);
                if let Ok(value) = serde_json::from_slice(&message)
                    && sender.send(value).is_err()
                {
                    return;
                }
                message.clear();
            }
        });
        Ok(Browser { child, requests: to_browser_write, answers, next_id: 0, _profile: profile })
    }

    /// Sends `method` (in `session`, if any) and waits for its answer's result.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> anyhow::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message)?;
        bytes.push(0);
        self.requests.write_all(&bytes).with_context(|| format!("sending {method} to chromium"))?;
        let deadline = Instant::now() + CALL_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = self.answers.recv_timeout(left).with_context(|| format!("no answer to {method}"))?;
            if answer["id"] != json!(id) {
                continue; // an event, or an answer to an earlier call
            }
            if let Some(error) = answer.get("error") {
                bail!("{method}: {error}");
            }
            return Ok(answer["result"].clone());
        }
    }

    /// Opens `url` in a new page.
    pub fn open(&mut self, url: &str) -> anyhow::Result<Page<'_>> {
        let target = self.call(None, "Target.createTarget", json!({ "url": url }))?;
        let target_id = target["targetId"].as_str().context("no target id")?.to_string();
        let attached = self.call(None, "Target.attachToTarget", json!({ "targetId": target_id, "flatten": true }))?;
        let session = attached["sessionId"].as_str().context("no session id")?.to_string();
        Ok(Page { browser: self, session })
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Page<'_> {
    /// The value of the script `expression` (awaited if it is a promise); an exception
    /// it throws is an error.
    pub fn eval(&mut self, expression: &str) -> anyhow::Result<Value> {
        let params = json!({ "expression": expression, "returnByValue": true, "awaitPromise": true });
        let result = self.browser.call(Some(&self.session), "Runtime.evaluate", params)?;
        if let Some(exception) = result.get("exceptionDetails") {
            bail!("{expression}: {exception}");
        }
        Ok(result["result"]["value"].clone())
    }

    /// Evaluates `expression` every 100 ms until it is truthy (returning its value), for
    /// up to `limit`; the error names what was awaited and the last value seen.
    pub fn wait_for(&mut self, expression: &str, limit: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let value = self.eval(expression)?;
            let truthy = !matches!(&value, Value::Null | Value::Bool(false)) && value != json!(0) && value != json!("");
            if truthy {
                return Ok(value);
            }
            if Instant::now() >= deadline {
                bail!("waited {limit:?} for {expression}; last {value}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
