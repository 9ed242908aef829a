//! The bad-input matrix: what a new user gets wrong, tried on the real binaries (`ctl`,
//! `reprise-capture`, `reprise-controller`) as a user would. Each case is a command line
//! (and the input file it writes), the exit status (0 success, 1 runtime error, 2 usage
//! error), a line of stderr said exactly (or the stable part of one when a part of it
//! varies: a time, a temporary path), and for data cases what was stored: the valid
//! records around the bad ones, counted. Every stderr is printable text, no line of it
//! long, and at most one `error:` line.
//!
//! A controller (with a token) and a worker run as processes on a file catalog, over a
//! topic of the test broker (deploy/local/services.sh). Needs the binaries built
//! (`cargo build --bins`). `--nocapture` prints the table.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use reprise_loadtests::pcapgen::{self, PcapProfile};
use reprise_loadtests::procs::{self, Daemon};
use reprise_loadtests::sink::Sink;
use reprise_loadtests::synth::{self, Profile};
use reprise_store::log::NewRecord;

/// What stderr must say.
enum Says {
    /// Stderr is this one line, nothing else.
    Only(String),
    /// One line of stderr is exactly this.
    Line(String),
    /// One line of stderr holds this (the rest of that line varies).
    Part(String),
}

/// What must hold after the run besides its exit status and stderr.
enum Then {
    Nothing,
    /// The log holds `records` records, `truncated` of them with a body cut short; the
    /// counters capture printed have these values.
    Stored {
        log: String,
        records: usize,
        truncated: usize,
        counters: Vec<(&'static str, u64)>,
    },
    /// The sink got `requests` requests; ctl's stdout has the line `stdout`.
    Sent {
        requests: u64,
        stdout: String,
    },
}

struct Case {
    name: &'static str,
    program: &'static str,
    args: Vec<String>,
    /// The environment (`REPRISE_*` variables of the test's own are removed).
    env: Vec<(&'static str, String)>,
    exit: i32,
    says: Says,
    /// Never in stderr (client settings, binary).
    hidden: Vec<&'static str>,
    then: Then,
}

/// A case of `program args`, exiting `exit` saying `says`.
fn case(name: &'static str, program: &'static str, args: &[&str], exit: i32, says: Says) -> Case {
    let args = args.iter().map(|a| a.to_string()).collect();
    Case { name, program, args, env: Vec::new(), exit, says, hidden: Vec::new(), then: Then::Nothing }
}

impl Case {
    fn env(mut self, env: &[(&'static str, String)]) -> Case {
        self.env.extend_from_slice(env);
        self
    }

    fn then(mut self, then: Then) -> Case {
        self.then = then;
        self
    }

    fn hiding(mut self, hidden: &[&'static str]) -> Case {
        self.hidden.extend_from_slice(hidden);
        self
    }
}

fn only(line: impl Into<String>) -> Says {
    Says::Only(line.into())
}

fn line(line: impl Into<String>) -> Says {
    Says::Line(line.into())
}

fn part(part: impl Into<String>) -> Says {
    Says::Part(part.into())
}

/// What a run printed.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: Vec<u8>,
}

async fn run(case: &Case) -> Ran {
    let mut command = std::process::Command::new(procs::binary(case.program).unwrap());
    command.args(&case.args).stdin(std::process::Stdio::null());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("REPRISE_") {
            command.env_remove(key);
        }
    }
    command.envs(case.env.iter().map(|(k, v)| (k, v)));
    let out = tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap();
    Ran { code: out.status.code(), stdout: String::from_utf8_lossy(&out.stdout).into_owned(), stderr: out.stderr }
}

/// Every stderr: UTF-8 text without control characters (no binary, no terminal escapes),
/// no replacement characters, no line past 400 characters, at most one `error:` line.
fn printable(stderr: &[u8]) -> Result<&str, String> {
    let text = std::str::from_utf8(stderr).map_err(|e| format!("stderr is not UTF-8: {e}"))?;
    if let Some(c) = text.chars().find(|&c| (c.is_control() && c != '\n') || c == '\u{fffd}') {
        return Err(format!("stderr holds {c:?}: {text:?}"));
    }
    if let Some(long) = text.lines().find(|l| l.chars().count() > 400) {
        return Err(format!("a stderr line of {} characters: {long:?}", long.chars().count()));
    }
    if text.lines().filter(|l| l.starts_with("error:")).count() > 1 {
        return Err(format!("more than one error line: {text}"));
    }
    Ok(text)
}

fn check_stderr(case: &Case, stderr: &str) -> Result<(), String> {
    let lines: Vec<&str> = stderr.lines().map(str::trim_end).collect();
    let said = match &case.says {
        Says::Only(expected) => lines == [expected.as_str()],
        Says::Line(expected) => lines.contains(&expected.as_str()),
        Says::Part(expected) => lines.iter().any(|l| l.contains(expected.as_str())),
    };
    if !said {
        return Err(format!("stderr does not say what it should:\n{stderr}"));
    }
    match case.hidden.iter().find(|h| stderr.contains(*h)) {
        Some(hidden) => Err(format!("stderr shows {hidden:?}:\n{stderr}")),
        None => Ok(()),
    }
}

async fn check_then(then: &Then, ran: &Ran, sink: &Sink) -> Result<(), String> {
    match then {
        Then::Nothing => Ok(()),
        Then::Stored { log, records, truncated, counters } => {
            let stored = common::read_log(log).await;
            let cut = stored.iter().filter(|r| r.body_truncated).count();
            if (stored.len(), cut) != (*records, *truncated) {
                return Err(format!("stored {} records, {cut} cut; expected {records}, {truncated} cut", stored.len()));
            }
            let printed: serde_json::Value = serde_json::from_str(&ran.stdout)
                .map_err(|e| format!("no counters on stdout ({e}): {}", ran.stdout))?;
            match counters.iter().find(|(name, value)| printed[name].as_u64() != Some(*value)) {
                Some((name, value)) => Err(format!("counter {name} is not {value}: {printed}")),
                None => Ok(()),
            }
        }
        Then::Sent { requests, stdout } => {
            let got = sink.report().requests;
            if got != *requests {
                return Err(format!("the sink got {got} requests, not {requests}"));
            }
            match ran.stdout.lines().any(|l| l.trim_end() == stdout) {
                true => Ok(()),
                false => Err(format!("stdout has no line {stdout:?}:\n{}", ran.stdout)),
            }
        }
    }
}

/// Runs a case and checks everything it must show.
async fn check(case: &Case, sink: &Sink) -> Result<(), String> {
    let ran = run(case).await;
    if ran.code != Some(case.exit) {
        let stderr = String::from_utf8_lossy(&ran.stderr);
        return Err(format!("exit {:?}, not {}:\n{stderr}{}", ran.code, case.exit, ran.stdout));
    }
    let stderr = printable(&ran.stderr)?;
    check_stderr(case, stderr)?;
    check_then(&case.then, &ran, sink).await
}

/// The offset of every packet record in a pcap file.
fn packet_offsets(pcap: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        offsets.push(at);
        let captured = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        at += 16 + captured;
    }
    offsets
}

/// A pcap of `requests` keep-alive requests on one connection (every second one a POST of
/// `body` bytes): its two handshake packets, then a request and a response each.
fn write_pcap(path: &Path, requests: u32, body: usize) -> Vec<u8> {
    let profile = PcapProfile { connections: 1, requests_per_connection: requests, body_bytes: body };
    let mut bytes = Vec::new();
    pcapgen::write(&mut bytes, &profile).unwrap();
    std::fs::write(path, &bytes).unwrap();
    bytes
}

/// A combined-format access-log line at 13:55:`second`.
fn access_line(second: u32, target: &str) -> String {
    format!(r#"10.0.0.1 - - [10/Oct/2000:13:55:{second:02} +0000] "GET {target} HTTP/1.1" 200 5 "-" "curl/8""#)
}

/// A GoReplay request message an hour ago (a broker's retention deletes older stamps).
fn gor_request(id: &str, target: &str) -> String {
    let at = reprise_store::now_ns() - 3_600_000_000_000;
    format!("1 {id} {at} 0\nGET {target} HTTP/1.1\r\nHost: shop\r\n\r\n\n🐵🙈🙉\n")
}

/// Header bytes a terminal would act on (colour, bell), then binary.
const BINARY_HEADER: &[u8] = b"\x1b[31m\x00\xff\xfe binary \x07\x08 garbage that goes on and on";

/// The running daemons and what the ctl cases need of them.
struct World {
    dir: tempfile::TempDir,
    controller: Daemon,
    _worker: Daemon,
    sink: Sink,
    log_url: String,
    /// `REPRISE_CONTROLLER` and `REPRISE_TOKEN` for ctl.
    ctl_env: Vec<(&'static str, String)>,
}

impl World {
    async fn start() -> World {
        let dir = tempfile::tempdir().unwrap();
        let token = format!("tok-{:016x}", rand::random::<u64>());
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, &token).unwrap();
        let catalog = format!("file://{}/catalog", dir.path().display());
        let log_url = reprise_store::testing::kafka_log_url("bad-input");
        reprise_store::open_log(&log_url).await.unwrap().ensure_topic(3).await.unwrap();
        let flags = ["--token-file".to_string(), token_file.display().to_string()];
        let controller = Daemon::controller("controller", &catalog, &log_url, &flags).unwrap().ready().await.unwrap();
        let worker = Daemon::worker("worker-0", &catalog, &[]).unwrap().ready().await.unwrap();
        procs::wait_registered(&catalog, &["worker-0".into()], 0, procs::READY_TIMEOUT).await.unwrap();
        let sink = Sink::start(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let ctl_env = vec![("REPRISE_CONTROLLER", controller.grpc_url()), ("REPRISE_TOKEN", token)];
        World { dir, controller, _worker: worker, sink, log_url, ctl_env }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A file log of its own for a capture case.
    fn file_log(&self, name: &str) -> String {
        format!("file://{}", self.path(name).display())
    }

    /// `ctl args` as a user with the token runs it; its stdout.
    async fn ctl(&self, args: &[&str]) -> String {
        let probe = case("setup", "ctl", args, 0, part("")).env(&self.ctl_env);
        let ran = run(&probe).await;
        assert_eq!(ran.code, Some(0), "ctl {args:?}: {}", String::from_utf8_lossy(&ran.stderr));
        ran.stdout.trim().to_string()
    }

    /// A recording of `valid` requests with `garbage` messages that are no traffic record
    /// among them, written straight to the controller's topic; returns its id.
    async fn record_with_garbage(&self, valid: u64, garbage: usize) -> String {
        let id = self.ctl(&["record", "start", "--name", "with-garbage"]).await;
        let profile = Profile::constant(valid, reprise_store::now_ns() - 60_000_000_000, 500_000_000, 4, 16);
        let mut records: Vec<NewRecord> = synth::Timestamps::new(&profile)
            .enumerate()
            .map(|(i, ts)| {
                let record = synth::request(&profile, i as u64, ts);
                let payload = Bytes::from(reprise_store::traffic::encode(&record));
                NewRecord { key: Bytes::from(record.connection_id), timestamp_ms: ts / 1_000_000, payload }
            })
            .collect();
        for g in 0..garbage {
            let payload = Bytes::from([BINARY_HEADER, &[g as u8; 64]].concat());
            let at = records.len() * (g + 1) / (garbage + 1);
            let key = Bytes::from(format!("gen-{g}"));
            records.insert(at, NewRecord { key, timestamp_ms: reprise_store::now_ms(), payload });
        }
        reprise_store::open_log(&self.log_url).await.unwrap().append(records).await.unwrap();
        self.ctl(&["record", "stop", &id]).await;
        id
    }
}

/// `ctl args`, run by a user who has the token.
fn ctl_case(world: &World, name: &'static str, args: &[&str], exit: i32, says: Says) -> Case {
    case(name, "ctl", args, exit, says).env(&world.ctl_env)
}

/// ctl's usage errors: exit 2, clap's line naming the flag and what it takes.
fn ctl_usage_cases(world: &World) -> Vec<Case> {
    // A replay of an unknown recording: the flags are refused before any call.
    let replay = |name, extra: &[&str], says| {
        let args = [&["replay", "--recording", "rec-x", "--target", "http://127.0.0.1:9"][..], extra].concat();
        ctl_case(world, name, &args, 2, says)
    };
    let replay_to = |name, target: &str, says| {
        ctl_case(world, name, &["replay", "--recording", "rec-x", "--target", target], 2, says)
    };
    let invalid =
        |flag: &str, value: &str, why: &str| line(format!("error: invalid value '{value}' for '{flag}': {why}"));
    let target = |t: &str| {
        let why = format!("\"{t}\" is not a target: give http://host[:port][/prefix] or https://...");
        invalid("--target <TARGET>", t, &why)
    };
    vec![
        replay_to("ctl: --target without a host", "http://", target("http://")),
        replay_to("ctl: --target of another scheme", "ftp://h", target("ftp://h")),
        replay(
            "ctl: --multiple -1",
            &["--multiple", "-1"],
            invalid("--multiple <MULTIPLE>", "-1", "\"-1\" is not a multiple: a whole number, 1 or more"),
        ),
        replay(
            "ctl: --rate=-5",
            &["--rate=-5"],
            invalid("--rate <RATE>", "-5", "\"-5\" is not a rate: a number of requests/s, 0 or more"),
        ),
        replay(
            "ctl: --speed that is no number",
            &["--speed", "fast"],
            invalid("--speed <SPEED>", "fast", "\"fast\" is not a positive number or \"max\""),
        ),
        replay(
            "ctl: --speed 0",
            &["--speed", "0"],
            invalid("--speed <SPEED>", "0", "\"0\" is not a positive number or \"max\""),
        ),
        replay(
            "ctl: --duration in an unknown unit",
            &["--duration", "5parsecs"],
            part("error: invalid value '5parsecs' for '--duration <DURATION>': unknown time unit \"parsecs\""),
        ),
        replay(
            "ctl: --max-error-rate above 1",
            &["--max-error-rate", "2"],
            invalid(
                "--max-error-rate <MAX_ERROR_RATE>",
                "2",
                "\"2\" is not a share: a number from 0 to 1 (0.05 is 5%)",
            ),
        ),
        replay("ctl: an unknown flag", &["--bogus"], line("error: unexpected argument '--bogus' found")),
    ]
}

/// ctl's refusals and failures: exit 1, one line that says what is wrong.
fn ctl_runtime_cases(world: &World, closed_port: u16) -> Vec<Case> {
    let ctl = |name, args: &[&str], says| ctl_case(world, name, args, 1, says);
    let (http, grpc) = (world.controller.http_addr().unwrap(), world.controller.grpc_url());
    let replay = ["replay", "--recording", "rec-x", "--target", "http://127.0.0.1:9"];
    vec![
        ctl("ctl: replay of an unknown recording", &replay, only("error: no recording rec-x")),
        ctl("ctl: record stop of an unknown id", &["record", "stop", "rec-x"], only("error: no recording rec-x")),
        ctl(
            "ctl: --controller at the HTTP port",
            &["--controller", &format!("http://{http}"), "workers"],
            only(format!(
                "error: http://{http} answers HTTP but not gRPC: ctl needs the controller's gRPC address \
                 (its --listen, port 7100 by default), not its HTTP API"
            )),
        ),
        case("ctl: a wrong token", "ctl", &["workers"], 1, only("error: the controller refused the token"))
            .env(&[("REPRISE_CONTROLLER", grpc.clone()), ("REPRISE_TOKEN", "not-it".into())]),
        case(
            "ctl: no token",
            "ctl",
            &["workers"],
            1,
            only("error: this controller needs a token: set REPRISE_TOKEN or pass --token-file"),
        )
        .env(&[("REPRISE_CONTROLLER", grpc)]),
        ctl(
            "ctl: a closed controller port",
            &["--controller", &format!("127.0.0.1:{closed_port}"), "workers"],
            only(format!(
                "error: cannot reach the controller at 127.0.0.1:{closed_port}: tcp connect error: \
                 Connection refused (os error 111)"
            )),
        ),
    ]
}

/// The controller's settings: flags and config files.
fn controller_cases(world: &World) -> Vec<Case> {
    let toml = |name: &str, text: &str| {
        let path = world.path(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let unknown_key = toml("unknown.toml", "listen = \"127.0.0.1:0\"\nlisten_port = 1\n");
    let not_toml = toml("bad.toml", "listen = 127.0.0.1:0\n");
    let catalog = format!("file://{}", world.path("controller-catalog").display());
    let log = world.file_log("controller-log");
    let controller = |name, extra: &[&str], exit, says| {
        let args = ["--catalog", &catalog, "--log", &log, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"];
        case(name, "reprise-controller", &[&args[..], extra].concat(), exit, says)
    };
    let bad_target = |t: &str, why: &str| {
        line(format!("error: invalid value '{t}' for '--allow-target <ALLOW_TARGETS>': \"{t}\"{why}"))
    };
    vec![
        controller(
            "controller: --allow-target with a /33 network",
            &["--allow-target", "10.0.0.0/33"],
            2,
            bad_target("10.0.0.0/33", " is not a CIDR network: invalid IP address syntax"),
        ),
        controller(
            "controller: --allow-target given a URL",
            &["--allow-target", "http://staging:8080"],
            2,
            bad_target("http://staging:8080", " is a URL: give its host[:port] (staging:8080)"),
        ),
        controller(
            "controller: --allow-target with a bad port",
            &["--allow-target", "staging:80a"],
            2,
            bad_target("staging:80a", ": \"80a\" is not a port"),
        ),
        controller(
            "controller: a config key that is no flag",
            &["--config", &unknown_key],
            2,
            line(format!("error: {unknown_key}: unknown setting \"listen_port\"")),
        ),
        controller(
            "controller: a config file that is not TOML",
            &["--config", &not_toml],
            2,
            line(format!("error: {not_toml}: TOML parse error at line 1, column 15")),
        ),
        controller(
            "controller: a missing config file",
            &["--config", "/nonexistent/reprise.toml"],
            2,
            line(
                "error: cannot read the config file /nonexistent/reprise.toml: No such file or directory (os error 2)",
            ),
        ),
        controller(
            "controller: a missing token file",
            &["--token-file", "/nonexistent/token"],
            1,
            only("error: cannot read the token file /nonexistent/token: No such file or directory (os error 2)"),
        ),
        controller(
            "controller: --metrics-linger-secs not a number",
            &["--metrics-linger-secs", "soon"],
            2,
            line(
                "error: invalid value 'soon' for '--metrics-linger-secs <METRICS_LINGER_SECS>': invalid digit found in string",
            ),
        ),
        case(
            "controller: an unknown flag",
            "reprise-controller",
            &["--bogus"],
            2,
            line("error: unexpected argument '--bogus' found"),
        ),
    ]
}

fn worker_cases(world: &World) -> Vec<Case> {
    let catalog = format!("file://{}", world.path("worker-catalog").display());
    let worker = |name, extra: &[&str], exit, says| {
        let args = ["--catalog", &catalog, "--listen", "127.0.0.1:0", "--name", "w-bad"];
        case(name, "reprise-worker", &[&args[..], extra].concat(), exit, says)
    };
    // The sink holds its port: a metrics address already in use.
    let taken = world.sink.addr.to_string();
    vec![
        worker(
            "worker: --metrics without a port",
            &["--metrics", "localhost"],
            2,
            line("error: invalid value 'localhost' for '--metrics <METRICS>': invalid socket address syntax"),
        ),
        worker(
            "worker: --metrics on a port in use",
            &["--metrics", &taken],
            1,
            only(format!("error: cannot listen on {taken}: Address already in use (os error 98)")),
        ),
    ]
}

/// A GoReplay file of one request, and a file log no case stores in: what the capture
/// cases that fail before reading need.
fn capture_basics(world: &World) -> (String, String) {
    (input(world, "one.gor", gor_request("c1", "/one").as_bytes()), world.file_log("unused-log"))
}

/// The capture's usage errors: exit 2, one line naming the flag or setting.
fn capture_usage_cases(world: &World) -> Vec<Case> {
    let (gor, log) = capture_basics(world);
    let with_gor = |name, extra: &[&str], says| {
        case(name, "reprise-capture", &[&["--log", &log, "--gor-file", &gor][..], extra].concat(), 2, says)
    };
    let not_toml = input(world, "capture.toml", b"max_body = lots\n");
    vec![
        with_gor(
            "capture: a bad --allow-url regex",
            &["--allow-url", "("],
            only(r#"error: bad URL pattern "(": unclosed group"#),
        ),
        with_gor(
            "capture: --deny-header without a colon",
            &["--deny-header", "X-Tenant"],
            only(r#"error: bad header rule "X-Tenant": give NAME:REGEX (e.g. "X-Tenant: ^a$")"#),
        ),
        with_gor(
            "capture: --sample above 1",
            &["--sample", "2"],
            only("error: --sample must be between 0 and 1, got 2"),
        ),
        with_gor(
            "capture: --max-body that is no number",
            &["--max-body", "1MB"],
            line("error: invalid value '1MB' for '--max-body <MAX_BODY>': invalid digit found in string"),
        ),
        with_gor("capture: an unknown flag", &["--bogus"], line("error: unexpected argument '--bogus' found")),
        with_gor(
            "capture: --recording without --catalog",
            &["--recording", "r"],
            only("error: --recording needs --catalog: the recording is kept in the catalog"),
        ),
        with_gor(
            "capture: a config file that is not TOML",
            &["--config", &not_toml],
            line(format!("error: {not_toml}: TOML parse error at line 1, column 12")),
        ),
        case(
            "capture: no input",
            "reprise-capture",
            &["--log", &log],
            2,
            only("error: nothing to capture: give --interface, --pcap-file, --gor-file or --access-log"),
        ),
    ]
}

/// The capture's failed runs: exit 1, one line, no client settings.
fn capture_failure_cases(world: &World, closed_port: u16) -> Vec<Case> {
    let (gor, log) = capture_basics(world);
    let run = |name, args: &[&str], says| case(name, "reprise-capture", args, 1, says);
    let dead = format!("kafka://127.0.0.1:{closed_port}/traffic?timeout_ms=1000");
    vec![
        run(
            "capture: a log URL of another scheme",
            &["--log", "ftp://h/t", "--gor-file", &gor],
            only(
                "error: cannot open ftp://h/t: invalid traffic log URL \"ftp://h/t\": unknown scheme \"ftp\" \
                 (use kafka:// or file://)",
            ),
        ),
        run(
            "capture: Kafka on a closed port",
            &["--log", &dead, "--gor-file", &gor],
            line(format!(
                "error: cannot create the traffic topic in kafka://127.0.0.1:{closed_port}/traffic: kafka: \
                 Meta data fetch error: BrokerTransportFailure (Local: Broker transport failure)"
            )),
        )
        // librdkafka may say why on lines of its own, but never with the client's settings.
        .hiding(&[
            "timeout_ms",
            "Configuration property",
            "message.timeout.ms",
            "linger.ms",
            "queue.buffering",
        ]),
        run(
            "capture: a missing pcap file",
            &["--log", &log, "--pcap-file", "/nonexistent/t.pcap"],
            only(
                "error: cannot read pcap file /nonexistent/t.pcap: libpcap error: /nonexistent/t.pcap: \
                 No such file or directory",
            ),
        ),
        run(
            "capture: a GoReplay file as --pcap-file",
            &["--log", &log, "--pcap-file", &gor],
            only(format!("error: cannot read pcap file {gor}: libpcap error: unknown file format")),
        ),
        run(
            "capture: a missing access log",
            &["--log", &log, "--access-log", "/nonexistent/a.log"],
            only("error: cannot read access log /nonexistent/a.log: No such file or directory (os error 2)"),
        ),
    ]
}

/// Writes `contents` to the file `name` in the world's directory; returns its path.
fn input(world: &World, name: &str, contents: &[u8]) -> String {
    let path = world.path(name);
    std::fs::write(&path, contents).unwrap();
    path.display().to_string()
}

/// `reprise-capture --log <log> input...`: an import into a file log of its own.
fn import_case(world: &World, name: &'static str, log: &str, input: &[&str], exit: i32, says: Says) -> Case {
    case(name, "reprise-capture", &[&["--log", &world.file_log(log)][..], input].concat(), exit, says)
}

/// The file log `log` holds `records` records, `truncated` of them cut; capture printed `counters`.
fn stored(world: &World, log: &str, records: usize, truncated: usize, counters: &[(&'static str, u64)]) -> Then {
    Then::Stored { log: world.file_log(log), records, truncated, counters: counters.to_vec() }
}

/// pcap files with bad parts: what is whole in them is stored, the rest said.
fn pcap_input_cases(world: &World) -> Vec<Case> {
    // 150 requests; the file stops inside the packet of the 100th.
    let full = write_pcap(&world.path("full.pcap"), 150, 200);
    let cut = input(world, "cut.pcap", &full[..packet_offsets(&full)[200] + 30]);
    let big = world.path("big-bodies.pcap");
    write_pcap(&big, 10, 3000);
    let big = big.display().to_string();
    vec![
        import_case(
            world,
            "capture: a pcap cut short",
            "cut-log",
            &["--pcap-file", &cut],
            0,
            part(format!("{cut} stops short after 200 packets (libpcap error: truncated dump file; tried to read ")),
        )
        .then(stored(world, "cut-log", 99, 0, &[("requests", 99), ("records_stored", 99)])),
        import_case(
            world,
            "capture: bodies over --max-body",
            "big-log",
            &["--pcap-file", &big, "--max-body", "1000"],
            0,
            part("5 bodies longer than --max-body (1000 bytes) were stored cut, flagged in their records"),
        )
        .then(stored(world, "big-log", 10, 5, &[("requests", 10), ("truncated_bodies", 5)])),
    ]
}

/// GoReplay files and access logs with bad parts: what is valid in them is stored, the
/// rest said (escaped, never echoed as binary).
fn text_input_cases(world: &World) -> Vec<Case> {
    let garbage_gor = input(world, "garbage.gor", &[BINARY_HEADER, b"\n\x00\x01\x02\xff body"].concat());
    let garbage_message = [BINARY_HEADER, "\nbody\n🐵🙈🙉\n".as_bytes()].concat();
    let (before, after) = (gor_request("a1", "/before"), gor_request("b2", "/after"));
    let mixed_gor = input(world, "mixed.gor", &[before.as_bytes(), &garbage_message, after.as_bytes()].concat());
    let bad_status = access_line(37, "/b").replace(" 200 ", " 2xx ");
    let lines = [access_line(38, "/c"), "garbage".into(), access_line(36, "/a"), bad_status, access_line(37, "/b")];
    let access = input(world, "access.log", lines.join("\n").as_bytes());
    let nothing = input(world, "nothing.log", b"garbage\n{\"half\": \n");
    let shown = r#"\x1b[31m\x00\xff\xfe binary \x07\x08 garbage that ..."#;
    vec![
        import_case(
            world,
            "capture: a GoReplay file of binary",
            "garbage-log",
            &["--gor-file", &garbage_gor],
            1,
            only(format!(
                "error: no GoReplay message parses; the first: {garbage_gor}: message 1 (byte 0): \
                 bad header line \"{shown}\": type must be 1, 2 or 3"
            )),
        ),
        import_case(
            world,
            "capture: a garbage GoReplay message between good ones",
            "mixed-log",
            &["--gor-file", &mixed_gor],
            0,
            part(format!(
                "GoReplay message skipped: {mixed_gor}: message 2 (byte 77): bad header line \"{shown}\": \
                 type must be 1, 2 or 3"
            )),
        )
        .then(stored(world, "mixed-log", 2, 0, &[("records_stored", 2), ("unparseable_messages", 1)])),
        import_case(
            world,
            "capture: an unsorted access log with bad lines",
            "access-log",
            &["--access-log", &access],
            0,
            part(format!("access-log line skipped: {access}:4: the status is not a number")),
        )
        .then(stored(world, "access-log", 3, 0, &[("records_stored", 3), ("unparseable_lines", 2)])),
        import_case(
            world,
            "capture: an access log in which nothing parses",
            "nothing-log",
            &["--access-log", &nothing],
            1,
            only(format!(
                "error: no access-log line parses; the first: {nothing}:1: the line ends early; \
                 {nothing}:2: not a JSON object"
            )),
        ),
    ]
}

/// A replay of a recording with garbage among its records: the garbage is skipped and
/// counted, every valid record sent.
fn garbage_replay_case(world: &World, recording: &str) -> Case {
    let target = format!("http://{}", world.sink.addr);
    let args = ["replay", "--recording", recording, "--target", &target];
    let skipped = "skipped     5 records (undecodable or not a request)".to_string();
    case("ctl: replay of a topic with garbage messages", "ctl", &args, 0, part(""))
        .env(&world.ctl_env)
        .then(Then::Sent { requests: 40, stdout: skipped })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_bad_input_gets_its_exit_status_and_one_clear_line() {
    let world = World::start().await;
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let recording = world.record_with_garbage(40, 5).await;
    let mut cases = ctl_usage_cases(&world);
    cases.extend(ctl_runtime_cases(&world, closed_port));
    cases.push(garbage_replay_case(&world, &recording));
    cases.extend(controller_cases(&world));
    cases.extend(worker_cases(&world));
    cases.extend(capture_usage_cases(&world));
    cases.extend(capture_failure_cases(&world, closed_port));
    cases.extend(pcap_input_cases(&world));
    cases.extend(text_input_cases(&world));
    assert!(cases.len() >= 25, "{} cases", cases.len());

    let mut failures = Vec::new();
    println!("{:<56} {:>4}  says", "case", "exit");
    for case in &cases {
        let says = match &case.says {
            Says::Only(text) | Says::Line(text) | Says::Part(text) => text,
        };
        println!("{:<56} {:>4}  {says}", case.name, case.exit);
        if let Err(why) = check(case, &world.sink).await {
            println!("    FAILED: {why}");
            failures.push(format!("{}: {why}", case.name));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}
