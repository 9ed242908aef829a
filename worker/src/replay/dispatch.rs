//! The sending side of a replay: one dispatcher per thread paces its lanes' records on
//! the shared timeline (pauses shift it) and sends them under the rate and in-flight
//! limits.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reprise_proto::v1::{MessageKind, PacingMode, TrafficRecord};
use reprise_store::log::LogError;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Replay;
use super::compare::{Key, Pending};
use super::lanes::{LaneStream, Merge, open_lane};
use super::sessions::{Sessions, Turn};
use super::shadow::{Shadow, ShadowSends};
use super::sides::send_all;
use reprise_rules::endpoint::write_endpoint;

use crate::request::{self, RecordedRequest};
use crate::sender::{HttpSender, KeptHost, Outcome, ReplayBody, ReplayRequest, Sender, SenderConfig, SimulatedSender};
use crate::stats::{EndpointSlots, Stats};
use crate::timer::PreciseTimer;

/// A record due this close is sent now rather than slept for.
const EARLY_SLACK: Duration = Duration::from_micros(20);

impl Replay {
    fn sender_config(&self, max_in_flight: usize) -> SenderConfig {
        let options = self.options();
        SenderConfig {
            timeout: Duration::from_millis(options.request_timeout_ms.max(1)),
            http2: options.http2,
            max_idle_per_host: max_in_flight,
            source_ip: self.source_ip,
            insecure_tls: options.insecure_tls,
        }
    }

    /// The request to send for a record (the replay's rules applied) and where; or none:
    /// a response, a record that is no replayable request, or a request the rules leave
    /// out (both counted).
    fn request_for(&self, record: &TrafficRecord) -> Option<(RecordedRequest, http::Uri)> {
        if record.kind() != MessageKind::Request {
            return None;
        }
        let unreplayable = |error: String| {
            self.stats.records_unreplayable.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(replay = %self.id, %error, "skipping a record that is not a replayable request");
        };
        let mut recorded = request::parse(&record.http, record.protocol(), &record.trailers)
            .map_err(|e| unreplayable(e.to_string()))
            .ok()?;
        let sample_key = [record.connection_id.as_bytes(), &record.sequence.to_be_bytes()];
        if !self.rules.keeps(recorded.method.as_str(), &recorded.path_and_query, &sample_key) {
            self.stats.records_filtered.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if let Some(rewritten) = self.rules.rewrite_url(&recorded.path_and_query) {
            recorded.path_and_query = rewritten;
        }
        self.rules.edit_headers(&mut recorded.headers);
        if self.rules.overrides(&http::header::HOST) {
            recorded.host = None;
        }
        let uri = self.target.uri_for(&recorded).map_err(|e| unreplayable(e.to_string())).ok()?;
        Some((recorded, uri))
    }

    /// Waits until `offset` past the (pause-shifted) start; `None` offset means now.
    /// Returns the due instant, or `None` if the replay was stopped meanwhile.
    async fn wait_until_due(
        &self,
        timer: &mut PreciseTimer,
        clock: &mut Clock,
        offset: Option<Duration>,
        paused: &mut watch::Receiver<bool>,
    ) -> Option<Instant> {
        loop {
            if *paused.borrow_and_update() {
                let since = Instant::now();
                tokio::select! {
                    _ = paused.wait_for(|p| !*p) => {}
                    _ = self.cancel.cancelled() => return None,
                }
                clock.paused_for += since.elapsed();
                continue;
            }
            let now = Instant::now();
            let due = offset.map_or(now, |o| clock.start + clock.paused_for + o);
            if due <= now + EARLY_SLACK {
                return (!self.cancel.is_cancelled()).then_some(due);
            }
            tokio::select! {
                slept = timer.sleep_until(due) => {
                    if let Err(e) = slept {
                        // Fall back to the coarse timer rather than stop the replay.
                        tracing::warn!(error = %e, "precise timer failed");
                        tokio::time::sleep_until(due).await;
                    }
                    return Some(due);
                }
                _ = paused.changed() => {}
                _ = self.cancel.cancelled() => return None,
            }
        }
    }
}

struct Clock {
    start: Instant,
    paused_for: Duration,
}

impl Clock {
    /// Time on the replay's timeline: since the start, less the time spent paused.
    fn elapsed(&self) -> Duration {
        self.start.elapsed().saturating_sub(self.paused_for)
    }
}

/// Pacing state shared by a replay's dispatch threads.
pub(super) struct SharedPacing {
    /// The worker's share of the cluster rate cap.
    pub(super) limiter: Option<DefaultDirectRateLimiter>,
    /// Constant pacing: sends numbered across threads, the n-th due at n / rate.
    pub(super) constant_sends: AtomicU64,
}

/// One dispatch thread of a replay.
pub(super) struct Dispatcher {
    pub(super) replay: Arc<Replay>,
    /// This thread's index: its stats shard.
    pub(super) shard: usize,
    pub(super) max_in_flight: usize,
    pub(super) shared: Arc<SharedPacing>,
}

/// What one dispatch thread's sends share.
struct ThreadSends<C> {
    /// The thread's bound on sends awaiting their response.
    in_flight: Arc<Semaphore>,
    sessions: Sessions<C>,
    /// `--compare`: the sends awaiting their recorded response, or the other way round.
    pending: Option<Arc<Pending>>,
    endpoints: EndpointSlots,
}

/// How one send goes out.
enum Route<C> {
    /// Over the sender's pooled connections.
    Pooled,
    /// To the target and, at once, the other sides of an A/B replay.
    Shadow(Box<ShadowSends>, Arc<Shadow>),
    /// Pooled, its response (and the baseline's) kept to compare with the recorded one.
    Compare(Box<Comparing>),
    /// In its session's turn, over the session's own connection.
    Session(Turn<C>),
}

/// A send whose response is compared with the recorded one.
struct Comparing {
    pending: Arc<Pending>,
    key: Key,
    baseline: Option<ReplayRequest>,
}

impl Comparing {
    /// Sends to the target and the baseline at once; hands both responses to the
    /// comparison. The target's outcome and when it ended.
    async fn exchange<S: Sender>(self, sender: &S, request: ReplayRequest) -> (Outcome, Instant) {
        let answers = send_all(sender, request, None, self.baseline).await;
        self.pending.replayed(&self.key, answers.target, answers.baseline);
        (answers.outcome, answers.ended)
    }
}

/// How a pass of one dispatch thread ended.
enum PassEnd {
    /// Every record of the pass was dispatched.
    Finished,
    /// Cancelled, released, fenced, or past the replay's duration.
    Stopped,
}

/// Where a dispatch thread is on the timeline.
struct Pacing {
    clock: Clock,
    timer: PreciseTimer,
    paused: watch::Receiver<bool>,
    /// Nothing due later than this is sent.
    until: Option<Duration>,
}

impl Dispatcher {
    /// Starts a sender on this thread's runtime and dispatches the lanes.
    pub(super) async fn run(self, lanes: Vec<LaneStream>, start: Instant) -> Result<(), String> {
        let config = self.replay.sender_config(self.max_in_flight);
        if self.replay.options().simulate {
            self.dispatch(SimulatedSender, lanes, start).await
        } else {
            self.dispatch(HttpSender::new(&config), lanes, start).await
        }
    }

    /// Dispatches this thread's lanes pass after pass. `first` holds each lane opened for
    /// its own first pass; a later pass opens the lanes again, while the pass before it
    /// is sent, so that its first records are read before they are due.
    async fn dispatch<S: Sender>(&self, sender: S, first: Vec<LaneStream>, start: Instant) -> Result<(), String> {
        let replay = &self.replay;
        let options = replay.options();
        let mut sends = ThreadSends {
            in_flight: Arc::new(Semaphore::new(self.max_in_flight)),
            sessions: Sessions::new(),
            pending: replay.compare.clone().map(|c| Pending::new(c, replay.stats.clone(), self.shard)),
            endpoints: EndpointSlots::default(),
        };
        let mut pacing = Pacing {
            clock: Clock { start, paused_for: Duration::ZERO },
            timer: PreciseTimer::new().map_err(|e| format!("cannot create a timer: {e}"))?,
            paused: replay.paused.subscribe(),
            until: (options.duration_ms > 0).then(|| Duration::from_millis(options.duration_ms)),
        };
        let lanes: Vec<usize> = first.iter().map(|l| l.lane).collect();
        let mut waiting = first;
        let mut pass = lanes.iter().map(|&i| replay.lanes[i].first_pass).min().unwrap_or(0);
        let mut opening: Option<JoinHandle<Result<Vec<LaneStream>, LogError>>> = None;
        while replay.passes.is_none_or(|passes| pass < passes) {
            let mut streams: Vec<LaneStream> = waiting.extract_if(.., |l| l.pass == pass).collect();
            if let Some(opening) = opening.take() {
                streams.extend(
                    opening.await.map_err(|e| format!("opening a pass failed: {e}"))?.map_err(|e| e.to_string())?,
                );
            }
            if replay.passes.is_none_or(|passes| pass + 1 < passes) {
                opening = Some(replay.readers.spawn(open_pass(replay.clone(), lanes.clone(), pass + 1)));
            }
            match self.dispatch_pass(&sender, streams, pass, &mut pacing, &mut sends).await? {
                PassEnd::Finished => pass += 1,
                PassEnd::Stopped => break,
            }
        }
        // Let what is in flight finish (each send is bounded by the request timeout).
        let _ = sends.in_flight.acquire_many(self.max_in_flight as u32).await;
        if let Some(pending) = sends.pending {
            pending.finish();
        }
        Ok(())
    }

    /// When a send of a record stamped `timestamp_ns` is due on the timeline, with the
    /// pass's `origin` (`None`: at once, at max speed).
    fn due_offset(&self, timestamp_ns: i64, origin: i64) -> Option<Duration> {
        let options = self.replay.options();
        match options.pacing() {
            PacingMode::Max => None,
            PacingMode::Constant => {
                let n = self.shared.constant_sends.fetch_add(1, Ordering::Relaxed);
                Some(Duration::from_secs_f64(n as f64 / options.rate_per_sec))
            }
            _ => {
                let since_origin = (timestamp_ns - origin).max(0) as f64;
                Some(Duration::from_nanos((since_origin / options.speed) as u64))
            }
        }
    }

    /// Reads one pass of the lanes in timestamp order, waits for each record's due time,
    /// and hands `multiple` copies to the sender under the rate and in-flight limits.
    async fn dispatch_pass<S: Sender>(
        &self,
        sender: &S,
        lanes: Vec<LaneStream>,
        pass: u32,
        pacing: &mut Pacing,
        sends: &mut ThreadSends<S::Session>,
    ) -> Result<PassEnd, String> {
        let (in_flight, pending) = (&sends.in_flight, sends.pending.as_ref());
        let replay = &self.replay;
        let options = replay.options();
        let multiple = options.multiple.max(1);
        let mut merged = Merge::new(lanes, replay.stats.clone());
        // Reused for every record's endpoint name.
        let mut endpoint_name = String::new();
        let origin = replay.assignment.origin_ns - i64::from(pass) * replay.assignment.pass_period_ns;
        replay.stats.in_pass(pass);
        loop {
            let next = tokio::select! {
                next = merged.next() => next,
                _ = replay.cancel.cancelled() => return Ok(PassEnd::Stopped),
            };
            let Some(next) = next else { return Ok(PassEnd::Finished) };
            let (lane, located) = next.map_err(|e| e.to_string())?;
            replay.stats.records_decoded.fetch_add(1, Ordering::Relaxed);
            // Fenced: once no controller has named the replay for its grace period, its
            // ranges may already be someone else's, so not one more send.
            if replay.stop_if_unheard(reprise_store::now_ms()) {
                return Ok(PassEnd::Stopped);
            }
            let record = &located.record;
            if let Some(pending) = pending
                && record.kind() == MessageKind::Response
                && let Ok(response) = request::parse_response(&record.http, record.protocol(), &record.trailers)
            {
                pending.recorded(&(record.connection_id.clone(), record.sequence), response, record.body_truncated);
            }
            let Some((recorded, uri)) = replay.request_for(record) else {
                replay.stats.take(lane, pass, located.offset, 0);
                continue;
            };
            write_endpoint(&mut endpoint_name, recorded.method.as_str(), &recorded.path_and_query);
            let slot = sends.endpoints.slot(&replay.stats, self.shard, &endpoint_name);
            let key = pending.map(|pending| {
                let key = (record.connection_id.clone(), record.sequence);
                pending.expect(key.clone(), multiple, slot, recorded.path_and_query.clone());
                key
            });
            replay.stats.planned_sends.fetch_add(u64::from(multiple), Ordering::Relaxed);
            let taken = replay.stats.take(lane, pass, located.offset, multiple);
            let timestamp = located.record.timestamp_ns;
            // Spread copies go out evenly over the gap to this thread's next record.
            let gap = match options.spread && multiple > 1 {
                true => tokio::select! {
                    next = merged.peek_timestamp() => next.map_err(|e| e.to_string())?.map_or(0, |n| (n - timestamp).max(0)),
                    _ = replay.cancel.cancelled() => return Ok(PassEnd::Stopped),
                },
                false => 0,
            };
            for copy in 0..multiple {
                let offset = self.due_offset(timestamp + gap * i64::from(copy) / i64::from(multiple), origin);
                if pacing.until.is_some_and(|until| offset.unwrap_or_else(|| pacing.clock.elapsed()) > until) {
                    return Ok(PassEnd::Stopped);
                }
                let Some(due) =
                    replay.wait_until_due(&mut pacing.timer, &mut pacing.clock, offset, &mut pacing.paused).await
                else {
                    return Ok(PassEnd::Stopped);
                };
                if let Some(limiter) = &self.shared.limiter {
                    tokio::select! {
                        _ = limiter.until_ready() => {}
                        _ = replay.cancel.cancelled() => return Ok(PassEnd::Stopped),
                    }
                }
                let permit = tokio::select! {
                    permit = in_flight.clone().acquire_owned() => permit.expect("semaphore never closed"),
                    _ = replay.cancel.cancelled() => return Ok(PassEnd::Stopped),
                };
                let request = build_request(&recorded, uri.clone(), options.keep_host);
                let route = match (&replay.shadow, pending, options.sessions) {
                    (_, _, true) => Route::Session(sends.sessions.turn(&record.connection_id, copy)),
                    (_, Some(pending), false) => Route::Compare(Box::new(Comparing {
                        pending: pending.clone(),
                        key: key.clone().expect("a compared request is noted"),
                        baseline: pending.compare().sides.baseline_request(&recorded, options.keep_host),
                    })),
                    (Some(shadow), None, false) => match shadow.sends(&recorded, options.keep_host) {
                        Some(sends) => Route::Shadow(Box::new(sends), shadow.clone()),
                        None => Route::Pooled,
                    },
                    (None, None, false) => Route::Pooled,
                };
                let body_bytes = recorded.body.len() as u64;
                let dispatch = move |stats: &Stats, shard: usize| {
                    let dispatched = Instant::now();
                    let lag = dispatched.saturating_duration_since(due);
                    stats.record_dispatch(shard, slot, dispatched.into_std(), lag.as_micros() as u64, body_bytes);
                };
                // A session's send leaves once the one before it is answered: its lag
                // counts from then.
                if !matches!(route, Route::Session(_)) {
                    dispatch(&replay.stats, self.shard);
                }
                replay.stats.sent(taken);
                if located.record.body_truncated {
                    replay.stats.sent_cut.fetch_add(1, Ordering::Relaxed);
                }
                replay.stats.in_flight.fetch_add(1, Ordering::Relaxed);
                let (stats, sender, shard) = (replay.stats.clone(), sender.clone(), self.shard);
                // Spawned on this thread's own runtime: completing it wakes no other thread.
                // The other routes' futures are boxed: the task holds the largest of its
                // routes' futures, and a spawn copies it (8 KiB unboxed: a fifth of a
                // dry run's CPU went to copying and allocating it).
                tokio::spawn(async move {
                    let (outcome, ended) = match route {
                        Route::Pooled => (sender.send(request).await, Instant::now()),
                        Route::Shadow(sends, shadow) => {
                            Box::pin(shadow.exchange(&sender, request, *sends, &stats, (shard, slot))).await
                        }
                        Route::Compare(comparing) => Box::pin(comparing.exchange(&sender, request)).await,
                        Route::Session(mut turn) => {
                            Box::pin(async {
                                let connection = turn.wait().await;
                                dispatch(&stats, shard);
                                let (outcome, connection) = sender.send_in_session(connection, request).await;
                                turn.end(connection);
                                (outcome, Instant::now())
                            })
                            .await
                        }
                    };
                    // Measured from when the request was due, not when it left: a late
                    // send counts as latency (no coordinated omission).
                    let latency = ended.saturating_duration_since(due);
                    stats.record_outcome(shard, slot, outcome, latency.as_micros() as u64);
                    stats.finished(taken);
                    stats.in_flight.fetch_sub(1, Ordering::Relaxed);
                    drop(permit);
                });
            }
        }
    }
}

/// Opens `lanes` of `replay` for `pass`, leaving out the lanes that start in that pass
/// (they were opened at prepare) or later.
async fn open_pass(replay: Arc<Replay>, lanes: Vec<usize>, pass: u32) -> Result<Vec<LaneStream>, LogError> {
    let mut opened = Vec::new();
    for index in lanes {
        let lane = &replay.lanes[index];
        if lane.first_pass < pass
            && let Some(stream) = open_lane(&*replay.log, index, lane, pass, &replay.stats).await?
        {
            opened.push(stream);
        }
    }
    Ok(opened)
}

pub(super) fn build_request(recorded: &RecordedRequest, uri: http::Uri, keep_host: bool) -> ReplayRequest {
    let body = ReplayBody::new(recorded.body.clone(), recorded.trailers.clone(), recorded.declares_length);
    let mut request = ReplayRequest::new(body);
    *request.method_mut() = recorded.method.clone();
    *request.version_mut() = recorded.version;
    *request.uri_mut() = uri;
    *request.headers_mut() = recorded.headers.clone();
    if keep_host && let Some(host) = &recorded.host {
        // The sender makes it the Host header, or `:authority` over HTTP/2.
        request.extensions_mut().insert(KeptHost(host.clone()));
    }
    request
}

/// The rate cap for original-pace and max modes (delays, never drops). Constant pacing
/// spaces sends itself.
pub(super) fn rate_limiter(rate_per_sec: f64, pacing: PacingMode) -> Option<DefaultDirectRateLimiter> {
    if rate_per_sec <= 0.0 || pacing == PacingMode::Constant {
        return None;
    }
    let period = Duration::from_secs_f64(1.0 / rate_per_sec);
    // A burst of about 10 ms worth of requests keeps the limiter from forcing a sleep
    // per request at high rates.
    let burst = NonZeroU32::new((rate_per_sec / 100.0).clamp(1.0, 10_000.0) as u32).expect("at least 1");
    Some(RateLimiter::direct(Quota::with_period(period)?.allow_burst(burst)))
}
