//! Recordings by id or by name: the controller knows them by id; people remember names.

use reprise_proto::v1::{ListRequest, Recording};

use crate::client::{Client, UsageError, status_error};

/// The recording `key` names: the one with that id, else the only one with that name.
/// Several with that name is a usage error listing them; none is "no recording".
pub fn resolve(list: Vec<Recording>, key: &str) -> anyhow::Result<Recording> {
    if let Some(exact) = list.iter().position(|r| r.id == key) {
        return Ok(list.into_iter().nth(exact).expect("at its position"));
    }
    let mut named: Vec<Recording> = list.into_iter().filter(|r| r.name == key).collect();
    match named.len() {
        0 => anyhow::bail!("no recording {key}"),
        1 => Ok(named.remove(0)),
        n => {
            named.sort_by(|a, b| a.created_at_ms.cmp(&b.created_at_ms).then(a.id.cmp(&b.id)));
            let ids: Vec<String> =
                named.iter().map(|r| format!("  {}  created {}", r.id, created_at(r.created_at_ms))).collect();
            Err(UsageError(format!("{n} recordings are named {key}; give one of their ids:\n{}", ids.join("\n")))
                .into())
        }
    }
}

/// The recording `key` names (see [`resolve`]), from the controller's list.
pub async fn lookup(client: &mut Client, key: &str) -> anyhow::Result<Recording> {
    let list = client.list_recordings(ListRequest {}).await.map_err(status_error)?.into_inner().recordings;
    resolve(list, key)
}

/// Milliseconds since the epoch as an RFC 3339 UTC time, to the second.
fn created_at(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recording(id: &str, name: &str, created_at_ms: i64) -> Recording {
        Recording { id: id.into(), name: name.into(), created_at_ms, ..Default::default() }
    }

    fn list() -> Vec<Recording> {
        vec![
            recording("rec-1", "checkout", 1_700_000_100_000),
            recording("rec-2", "search", 1_700_000_000_000),
            recording("rec-3", "search", 1_700_000_050_000),
            // A name that is another recording's id: the id wins.
            recording("rec-4", "rec-1", 1_700_000_200_000),
        ]
    }

    #[test]
    fn an_exact_id_wins_over_a_name() {
        assert_eq!(resolve(list(), "rec-1").unwrap().id, "rec-1");
        assert_eq!(resolve(list(), "rec-3").unwrap().id, "rec-3");
    }

    #[test]
    fn a_unique_name_is_its_recording() {
        assert_eq!(resolve(list(), "checkout").unwrap().id, "rec-1");
    }

    #[test]
    fn a_shared_name_is_a_usage_error_naming_every_id_oldest_first() {
        let error = resolve(list(), "search").unwrap_err();
        let usage = error.downcast_ref::<UsageError>().expect("a usage error (exit status 2)");
        assert_eq!(
            usage.0,
            "2 recordings are named search; give one of their ids:\n  rec-2  created 2023-11-14T22:13:20Z\n  \
             rec-3  created 2023-11-14T22:14:10Z"
        );
    }

    #[test]
    fn no_id_or_name_is_no_recording() {
        let error = resolve(list(), "nope").unwrap_err();
        assert!(error.downcast_ref::<UsageError>().is_none(), "not a usage error: {error}");
        assert_eq!(error.to_string(), "no recording nope");
    }
}
