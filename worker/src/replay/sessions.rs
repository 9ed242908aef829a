//! A session-aware replay's order on one dispatch thread: the sends of one original
//! connection (per copy of `--multiple`) form a chain; each waits for the previous one's
//! response and takes its connection over, so a session goes out in order over one
//! connection of its own. A chain idle for [`IDLE`] is dropped, and its connection
//! closed with it.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// How long a session's connection stays open without a send.
const IDLE: Duration = Duration::from_secs(30);
/// Turns handed out between two sweeps for idle chains.
const SWEEP_EVERY: usize = 4096;

/// (original connection id, copy of `--multiple`)
type SessionKey = (String, u32);

pub(super) struct Sessions<C> {
    chains: HashMap<SessionKey, Chain<C>>,
    turns: usize,
}

struct Chain<C> {
    /// The previous send's end, with the connection it leaves.
    previous: oneshot::Receiver<Option<C>>,
    last_turn: Instant,
}

/// One send's place in its session.
pub(super) struct Turn<C> {
    previous: Option<oneshot::Receiver<Option<C>>>,
    done: oneshot::Sender<Option<C>>,
}

impl<C> Sessions<C> {
    pub(super) fn new() -> Self {
        Sessions { chains: HashMap::new(), turns: 0 }
    }

    /// The next send of `session`'s copy `copy`.
    pub(super) fn turn(&mut self, session: &str, copy: u32) -> Turn<C> {
        let now = Instant::now();
        self.turns += 1;
        if self.turns.is_multiple_of(SWEEP_EVERY) {
            self.chains.retain(|_, chain| now.duration_since(chain.last_turn) < IDLE);
        }
        let (done, next) = oneshot::channel();
        let chain = Chain { previous: next, last_turn: now };
        let previous = self.chains.insert((session.to_string(), copy), chain).map(|c| c.previous);
        Turn { previous, done }
    }
}

impl<C> Turn<C> {
    /// Waits for the session's previous send to end; its connection, if it left one.
    pub(super) async fn wait(&mut self) -> Option<C> {
        match self.previous.take() {
            Some(previous) => previous.await.ok().flatten(),
            None => None,
        }
    }

    /// Ends this send: the next one may go, over `connection`.
    pub(super) fn end(self, connection: Option<C>) {
        let _ = self.done.send(connection);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_session_hands_its_connection_down_its_chain_in_order() {
        let mut sessions = Sessions::<u32>::new();
        let mut first = sessions.turn("c1", 0);
        let mut second = sessions.turn("c1", 0);
        let mut other = sessions.turn("c2", 0);
        assert_eq!(first.wait().await, None, "the first send opens the connection");
        assert_eq!(other.wait().await, None, "another session does not wait");
        let waiting = tokio::spawn(async move { second.wait().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "the second send waits for the first");
        first.end(Some(7));
        assert_eq!(waiting.await.unwrap(), Some(7), "and takes its connection");
        let mut copy = sessions.turn("c1", 1);
        assert_eq!(copy.wait().await, None, "a copy is a session of its own");
    }
}
