//! A new session as Redis itself serializes it, so that the next one is a single `RESTORE`.
//!
//! Every first visit creates the same session: the counter field at its step, nothing else.
//! Creating it with `MULTI` `HSET` `EXPIRE` `EXEC` makes Redis parse, queue and answer four
//! commands; `RESTORE key ttl payload` creates the same hash with its TTL in one command,
//! atomically, and refuses (`BUSYKEY`) rather than merges into a key that exists. The payload
//! is never written here: the first creation's transaction also `DUMP`s the new session, and
//! Redis's answer is the payload from then on. A Redis that cannot take it back (another
//! version after a failover, `DUMP` or `RESTORE` denied by the ACL or renamed away) says so
//! without running anything, and the store goes back to transactions.

use std::sync::{Arc, Mutex};

use deadpool_redis::redis::RedisError;

use crate::session::store::{Rejection, StoreError};

/// What [`Templates`] knows about creating a counter-only session.
#[derive(Debug)]
enum State {
    /// Nothing yet: the next creation's transaction `DUMP`s the new session.
    Unknown,
    /// `{field: step}` as this Redis serializes it.
    Known {
        field: Box<str>,
        step: i64,
        payload: Arc<[u8]>,
    },
    /// This Redis will not `DUMP` or `RESTORE` for us: transactions only.
    Off,
}

/// The learned payload of one store (one per HTTP worker, so the lock is never contended).
#[derive(Debug)]
pub struct Templates(Mutex<State>);

/// How to create a counter-only session right now.
pub enum Plan {
    /// `RESTORE` this payload (shared, so handing it out allocates nothing).
    Restore(Arc<[u8]>),
    /// A transaction; `dump` when its `DUMP` should teach the payload.
    Transaction { dump: bool },
}

/// Why a `RESTORE` or a learning `DUMP` was refused, as far as the store's next step goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The payload does not suit this Redis (another version or build): learn it again.
    Payload,
    /// The command is denied or renamed away: stop trying.
    Command,
}

impl Templates {
    /// Nothing learned yet.
    pub fn new() -> Self {
        Self(Mutex::new(State::Unknown))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves a whole value behind: nothing to repair.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How to create the session `{field: step}`.
    pub fn plan(&self, field: &str, step: i64) -> Plan {
        match &*self.state() {
            State::Known {
                field: f,
                step: s,
                payload,
            } if **f == *field && *s == step => Plan::Restore(payload.clone()),
            State::Off => Plan::Transaction { dump: false },
            _ => Plan::Transaction { dump: true },
        }
    }

    /// Keeps `payload`, Redis's `DUMP` of a session that is `{field: step}` and nothing else.
    pub fn learn(&self, field: &str, step: i64, payload: Vec<u8>) {
        let mut state = self.state();
        if !matches!(*state, State::Off) {
            *state = State::Known {
                field: field.into(),
                step,
                payload: payload.into(),
            };
        }
    }

    /// Acts on a refusal: forgets the payload, or stops using `DUMP` and `RESTORE` for good.
    pub fn refused(&self, refusal: &Refusal) {
        *self.state() = match refusal {
            Refusal::Payload => State::Unknown,
            Refusal::Command => State::Off,
        };
    }
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether `e` is Redis refusing a `RESTORE` or a queued `DUMP` without running it, for a
/// reason that a transaction without them avoids. Any other error is the store's to report.
pub fn refusal(e: &StoreError) -> Option<Refusal> {
    match e {
        StoreError::Rejected {
            reason: Rejection::Permission,
            ..
        } => Some(Refusal::Command),
        StoreError::Command(source) => {
            let detail = source.downcast_ref::<RedisError>()?.detail()?;
            if detail.starts_with("DUMP payload version or checksum are wrong")
                || detail.starts_with("Bad data format")
            {
                Some(Refusal::Payload)
            } else if detail.starts_with("unknown command") {
                Some(Refusal::Command)
            } else {
                None
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use deadpool_redis::redis::{self, Value};

    use super::*;

    /// The error an error reply becomes, classified as the store does.
    fn store_error(reply: &str) -> StoreError {
        let Ok(Value::ServerError(e)) =
            redis::parse_redis_value(format!("-{reply}\r\n").as_bytes())
        else {
            panic!("not an error reply: {reply}");
        };
        super::super::classify(e.into())
    }

    #[test]
    fn refusals_that_a_transaction_avoids_are_told_apart_from_other_errors() {
        let cases = [
            (
                "ERR DUMP payload version or checksum are wrong",
                Some(Refusal::Payload),
            ),
            ("ERR Bad data format", Some(Refusal::Payload)),
            (
                "ERR unknown command 'RESTORE', with args beginning with: 'sess:x' ",
                Some(Refusal::Command),
            ),
            (
                "NOPERM User app has no permissions to run the 'restore' command",
                Some(Refusal::Command),
            ),
            ("BUSYKEY Target key name already exists.", None),
            (
                "OOM command not allowed when used memory > 'maxmemory'.",
                None,
            ),
            (
                "READONLY You can't write against a read only replica.",
                None,
            ),
            ("ERR wrong number of arguments for 'restore' command", None),
        ];
        for (reply, expected) in cases {
            assert_eq!(refusal(&store_error(reply)), expected, "{reply}");
        }
        assert_eq!(
            refusal(&StoreError::Timeout(std::time::Duration::ZERO)),
            None
        );
    }

    #[test]
    fn a_payload_serves_only_its_own_field_and_step_until_refused() {
        let templates = Templates::new();
        assert!(matches!(
            templates.plan("visits", 1),
            Plan::Transaction { dump: true }
        ));
        templates.learn("visits", 1, b"payload".to_vec());
        assert!(matches!(templates.plan("visits", 1), Plan::Restore(p) if *p == *b"payload"));
        assert!(matches!(
            templates.plan("visits", 2),
            Plan::Transaction { dump: true }
        ));
        assert!(matches!(
            templates.plan("hits", 1),
            Plan::Transaction { dump: true }
        ));

        templates.refused(&Refusal::Payload);
        assert!(matches!(
            templates.plan("visits", 1),
            Plan::Transaction { dump: true }
        ));

        templates.learn("visits", 1, b"payload".to_vec());
        templates.refused(&Refusal::Command);
        assert!(matches!(
            templates.plan("visits", 1),
            Plan::Transaction { dump: false }
        ));
        templates.learn("visits", 1, b"payload".to_vec());
        assert!(
            matches!(
                templates.plan("visits", 1),
                Plan::Transaction { dump: false }
            ),
            "once refused, never again"
        );
    }
}
