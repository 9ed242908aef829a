//! What ctl prints: tables for people, JSON for machines, the live progress line and the
//! replay summary.

use reprise_proto::v1::{
    CaptureInfo, EndpointDiff, EndpointResult, Ledger, Recording, ReplayPlanView, ReplayStatus, WorkerInfo,
};
use serde::Serialize;
use std::collections::BTreeMap;

pub fn print_json(value: &impl Serialize) {
    println!("{}", serde_json::to_string_pretty(value).expect("serialisable"));
}

fn span_s(recording: &Recording) -> Option<f64> {
    Some((recording.last_timestamp_ns? - recording.first_timestamp_ns?) as f64 / 1e9)
}

pub fn recordings(list: &[Recording]) {
    if list.is_empty() {
        println!("no recordings (start one: ctl record start --name NAME)");
        return;
    }
    println!("{:<22} {:<20} {:<9} {:>10} {:>9}  MISSED", "ID", "NAME", "STATE", "RECORDS", "SPAN_S");
    for r in list {
        let span = span_s(r).map_or("-".into(), |s| format!("{s:.1}"));
        let missed = r.ledger.as_ref().map_or("-".into(), Ledger::summary);
        println!(
            "{:<22} {:<20} {:<9} {:>10} {:>9}  {missed}",
            r.id,
            r.name,
            r.state().to_string(),
            r.record_count,
            span
        );
    }
}

pub fn recording(recording: &Recording) {
    let span = span_s(recording).map_or("-".into(), |s| format!("{s:.1} s"));
    println!("{}: {} records over {span}", recording.id, recording.record_count);
    if recording.missing_records > 0 {
        println!("warning: {} records are already gone from the log (retention)", recording.missing_records);
    }
    if let Some(ledger) = &recording.ledger {
        println!("missed by the capture: {}", ledger.summary());
    }
}

pub fn workers(list: &[WorkerInfo]) {
    if list.is_empty() {
        println!("no live workers (start one: reprise-worker --catalog URL, the controller's catalog)");
        return;
    }
    println!("{:<20} {:<24} {:>5} {:<10} LABELS", "ID", "ADDRESS", "CORES", "VERSION");
    for w in list {
        let labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("{:<20} {:<24} {:>5} {:<10} {}", w.id, w.address, w.cores, w.version, labels.join(","));
    }
}

pub fn captures(list: &[CaptureInfo]) {
    if list.is_empty() {
        println!("no live capture nodes (reprise-capture --catalog URL registers one)");
        return;
    }
    println!("{:<20} {:<10} {:>12} {:>12} {:>10} {:>10}", "ID", "INTERFACE", "PACKETS", "RECORDS", "DROPS", "SPOOL_B");
    for c in list {
        let n = c.counters.unwrap_or_default();
        let drops = n.kernel_drops + n.own_drops;
        let interface = if c.interface.is_empty() { "-" } else { c.interface.as_str() };
        println!(
            "{:<20} {:<10} {:>12} {:>12} {:>10} {:>10}",
            c.id, interface, n.packets, n.records, drops, n.spool_bytes
        );
    }
}

pub fn replays(list: &[ReplayStatus]) {
    if list.is_empty() {
        println!("no replays (start one: ctl replay --recording ID|NAME --target URL)");
        return;
    }
    println!("{:<22} {:<22} {:<10} {:>10} {:>10} {:>8}", "ID", "RECORDING", "STATE", "SENT", "QPS", "ERRORS");
    for s in list {
        let state = s.state().to_string();
        println!("{:<22} {:<22} {:<10} {:>10} {:>10.0} {:>8}", s.id, s.recording_id, state, s.sent, s.qps, s.errors);
    }
}

pub fn progress_line(s: &ReplayStatus) -> String {
    let width = 24;
    let filled = ((s.progress * width as f64) as usize).min(width);
    let eta = s.eta_s.map_or("-".into(), |e| format!("{e:.0}s"));
    let latency = s.latency_ms.as_ref().map_or("-".into(), |l| format!("{:.1} ms", l.p99));
    format!(
        "[{}{}] {:>5.1}%{}  {:>9.0} req/s  p99 {latency}  lag p99 {:.2} ms  errors {}  ETA {eta}",
        "=".repeat(filled),
        " ".repeat(width - filled),
        s.progress * 100.0,
        pass_label(s).map(|p| format!("  {p}")).unwrap_or_default(),
        s.current_qps,
        s.lag().p99,
        s.errors + s.http_errors,
    )
}

/// A dry run's plan: what would be sent, how fast, by whom.
pub fn plan(p: &ReplayPlanView, json: bool) {
    if json {
        print_json(p);
        return;
    }
    println!("dry run     nothing was started or sent");
    println!("recording   {}  ({} records, {} requests)", p.recording_id, p.records, p.requests);
    println!("target      {}", p.target);
    let duration = p.duration_s.map_or("- (as fast as the workers go)".into(), |d| format!("{d:.1} s"));
    println!("sends       {}  over {duration}", p.sends);
    println!("rate        mean {:.0} req/s  peak {:.0} req/s (busiest second)", p.mean_rate, p.peak_rate);
    println!("workers     {}, up to {} connections each", p.workers.len(), p.connections_per_worker);
    for w in &p.workers {
        let shares: Vec<String> = w
            .shares
            .iter()
            .map(|s| match s.stride {
                0 | 1 => format!("p{}[{}..{})", s.partition, s.start_offset, s.end_offset),
                k => format!("p{}[{}..{}) %{k}={}", s.partition, s.start_offset, s.end_offset, s.phase),
            })
            .collect();
        println!("worker      {:<16} {:>9} records  {}", w.id, w.records, shares.join(" "));
    }
    for warning in &p.warnings {
        println!("warning     {warning}");
    }
}

/// "pass 2/3" (or "pass 7/endless") for a looping replay; nothing for a single pass.
fn pass_label(s: &ReplayStatus) -> Option<String> {
    match s.passes {
        1 => None,
        0 => Some(format!("pass {}/endless", s.current_pass)),
        n => Some(format!("pass {}/{n}", s.current_pass)),
    }
}

pub fn status(s: &ReplayStatus, json: bool) {
    if json {
        print_json(s);
    } else {
        print!("{}", summary(s));
    }
}

/// Counts by kind in words, `2xx 10  4xx 3`, leaving out the kinds with none.
fn counts(by_kind: &BTreeMap<String, u64>) -> String {
    let said: Vec<String> = by_kind.iter().filter(|(_, n)| **n > 0).map(|(kind, n)| format!("{kind} {n}")).collect();
    said.join("  ")
}

/// `total` followed by its breakdown by kind in parentheses, when there is one.
fn with_breakdown(total: String, by_kind: &BTreeMap<String, u64>) -> String {
    match counts(by_kind) {
        kinds if kinds.is_empty() => total,
        kinds => format!("{total}  ({kinds})"),
    }
}

/// A replay's status as one table: a label column, then its values in words.
pub fn summary(s: &ReplayStatus) -> String {
    let mut out = String::new();
    let speed = s.speed.map_or(s.pacing().to_string(), |f| format!("x{f}"));
    let lag = s.lag();
    row(&mut out, "replay", format!("{} ({})", s.id, s.state()));
    row(
        &mut out,
        "recording",
        format!("{}  ({} records, multiple {}, {speed})", s.recording_id, s.records, s.multiple),
    );
    row(&mut out, "target", s.target.clone());
    row(&mut out, "sent", format!("{}  in {:.1} s  ({:.0} req/s)", s.sent, s.duration_s, s.qps));
    row(&mut out, "responses", with_breakdown(format!("ok {}  4xx/5xx {}", s.ok, s.http_errors), &s.status));
    row(&mut out, "errors", with_breakdown(s.errors.to_string(), &s.error_kinds));
    row(
        &mut out,
        "latency ms",
        s.latency_ms.as_ref().map_or("- (no response)".into(), |l| {
            format!("p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}", l.p50, l.p90, l.p99, l.max)
        }),
    );
    row(&mut out, "lag ms", format!("p50 {:.2}  p99 {:.2}  max {:.2}", lag.p50, lag.p99, lag.max));
    if let Some(pass) = pass_label(s) {
        row(&mut out, "loop", pass);
    }
    if s.skipped > 0 {
        row(&mut out, "skipped", format!("{} records (undecodable or not a request)", s.skipped));
    }
    if s.filtered > 0 {
        row(
            &mut out,
            "left out",
            format!("{} requests (the replay's --method, --allow-url, --deny-url, --sample)", s.filtered),
        );
    }
    if s.reassigned > 0 {
        let bound = s.duplicates_bound;
        row(
            &mut out,
            "reassigned",
            format!("{} records from lost or stopped workers (at most {bound} sent twice)", s.reassigned),
        );
    }
    if !s.endpoints.is_empty() {
        out.push_str(&format!("{}\n", endpoint_table(&s.endpoints)));
    }
    if !s.diffs.is_empty() {
        out.push_str(&format!("{}\n", diff_table(&s.diffs)));
    }
    for w in &s.workers {
        let name = if w.part == 0 { w.id.clone() } else { format!("{}#{}", w.id, w.part) };
        let handed = if w.handed_to.is_empty() { String::new() } else { format!("  -> {}", w.handed_to.join(", ")) };
        let error = w.error.as_deref().map(|e| format!("  {e}")).unwrap_or_default();
        row(
            &mut out,
            "worker",
            format!("{name:<16} {:<10} read {:>9} sent {:>9}{handed}{error}", w.state, w.read, w.sent),
        );
    }
    if let Some(error) = &s.error {
        row(&mut out, "error", error.clone());
    }
    if let Some(breach) = &s.breach {
        row(&mut out, "BREACHED", breach.clone());
    }
    for warning in &s.warnings {
        row(&mut out, "warning", warning.clone());
    }
    out
}

/// One line of the summary: the label in its column, then the value.
fn row(out: &mut String, label: &str, value: String) {
    out.push_str(&format!("{label:<11} {value}\n"));
}

/// `ctl diff`: an A/B replay's comparisons per endpoint; JSON as `{"endpoints": [...]}`.
pub fn diff(s: &ReplayStatus, json: bool) {
    if json {
        print_json(&serde_json::json!({ "replay": s.id, "endpoints": s.diffs }));
    } else if s.diffs.is_empty() {
        println!("replay {} compared no responses (replay with --candidate URL for an A/B diff)", s.id);
    } else {
        println!("{}", diff_table(&s.diffs));
        for d in &s.diffs {
            for sample in &d.samples {
                println!(
                    "sample      {} {}  {}: expected {}  got {}",
                    d.endpoint, sample.request, sample.field, sample.expected, sample.actual
                );
            }
        }
    }
}

/// Per compared endpoint: requests compared, those that differed, and the fields.
fn diff_table(diffs: &[EndpointDiff]) -> String {
    let width = diffs.iter().map(|d| d.endpoint.len()).max().unwrap_or(0).clamp(8, 60);
    let mut out = format!("diff        {:<width$} {:>9} {:>9}  fields (noise)", "", "compared", "differing");
    for d in diffs {
        let name: String = d.endpoint.chars().take(width).collect();
        let fields: Vec<String> =
            d.fields.iter().map(|f| format!("{f} {}", d.field_counts.get(f).copied().unwrap_or(0))).collect();
        let noise = if d.noise.is_empty() { String::new() } else { format!(" ({})", d.noise.join(", ")) };
        out.push_str(&format!(
            "\n            {name:<width$} {:>9} {:>9}  {}{noise}",
            d.compared,
            d.differing,
            if fields.is_empty() { "-".to_string() } else { fields.join(", ") },
        ));
    }
    out
}

/// Results per endpoint, one row each: sends, responses by class, errors by kind, and
/// latency percentiles.
fn endpoint_table(endpoints: &[EndpointResult]) -> String {
    let width = endpoints.iter().map(|e| e.endpoint.len()).max().unwrap_or(0).clamp(8, 60);
    let mut out = format!(
        "endpoint    {:<width$} {:>9} {:>9} {:>7} {:>7} {:>7} {:>9} {:>9}",
        "", "sent", "2xx", "3xx", "4xx", "5xx", "errors", "p50/p99 ms"
    );
    for e in endpoints {
        let class = |c: &str| e.status.get(c).copied().unwrap_or(0);
        let errors: u64 = e.error_kinds.values().sum();
        let latency = e.latency_ms.as_ref().map_or("-".into(), |l| format!("{:.2}/{:.2}", l.p50, l.p99));
        let name: String = e.endpoint.chars().take(width).collect();
        out.push_str(&format!(
            "\n            {name:<width$} {:>9} {:>9} {:>7} {:>7} {:>7} {errors:>9} {latency:>9}",
            e.sent,
            class("2xx") + class("1xx"),
            class("3xx"),
            class("4xx"),
            class("5xx"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use reprise_proto::v1::Percentiles;

    #[test]
    fn the_endpoint_table_has_a_row_per_endpoint() {
        let row = |endpoint: &str, sent: u64, status: &[(&str, u64)]| EndpointResult {
            endpoint: endpoint.into(),
            sent,
            status: status.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
            error_kinds: [("timeout".to_string(), sent - status.iter().map(|(_, n)| n).sum::<u64>())].into(),
            latency_ms: Some(Percentiles { p50: 1.5, p99: 12.25, ..Default::default() }),
        };
        let table =
            endpoint_table(&[row("GET /items/{id}", 40, &[("2xx", 39)]), row("POST /v2/search", 1, &[("4xx", 1)])]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        let cells = |line: &str| line.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        assert_eq!(cells(lines[1]), ["GET", "/items/{id}", "40", "39", "0", "0", "0", "1", "1.50/12.25"]);
        assert_eq!(cells(lines[2]), ["POST", "/v2/search", "1", "0", "0", "1", "0", "0", "1.50/12.25"]);
    }

    #[test]
    fn the_summary_is_one_table_of_words_without_zero_counts_or_json() {
        let by_kind = |pairs: &[(&str, u64)]| pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        let status = ReplayStatus {
            id: "rep-1".into(),
            recording_id: "rec-1".into(),
            target: "http://127.0.0.1:8080".into(),
            ok: 10,
            http_errors: 2,
            errors: 3,
            status: by_kind(&[("2xx", 10), ("3xx", 0), ("5xx", 2)]),
            error_kinds: by_kind(&[("connect", 0), ("timeout", 3)]),
            latency_ms: Some(Percentiles { p50: 1.0, p90: 2.0, p99: 3.0, max: 4.0, ..Default::default() }),
            ..Default::default()
        };
        let table = summary(&status);
        let line = |label: &str| table.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("{table}"));
        assert_eq!(line("responses"), "responses   ok 10  4xx/5xx 2  (2xx 10  5xx 2)");
        assert_eq!(line("errors"), "errors      3  (timeout 3)");
        assert_eq!(line("latency ms"), "latency ms  p50 1.00  p90 2.00  p99 3.00  max 4.00");
        for l in table.lines() {
            // Every value starts in the same column, after a label of at most 11 characters.
            assert!(l.len() > 12 && l.as_bytes()[11] == b' ' && l.as_bytes()[12] != b' ', "{l:?}");
            assert!(!l.contains(['{', '}', '"']), "a JSON fragment in {l:?}");
        }
        let none = ReplayStatus { error_kinds: by_kind(&[("connect", 0)]), ..status };
        assert_eq!(summary(&none).lines().find(|l| l.starts_with("errors")), Some("errors      3"));
    }
}
