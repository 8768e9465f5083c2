//! One behaviour suite for every `SessionStore`, run against Redis and the memory store.

use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::redis;
use futures_util::future::join_all;

use redis_sessions::config::{NodeAddress, RedisEndpoint, RedisTopology};
use redis_sessions::session::id::{SessionId, SessionKey};
use redis_sessions::session::store::{
    Applied, MemoryStore, Presence, RedisStore, SessionStore, Update,
};
use secrecy::{ExposeSecret, SecretString};

use crate::support::RedisServer;
use crate::support::topology::{RedisCluster, conn, run};

const TTL: Duration = Duration::from_secs(60);

fn update<'a>(
    presence: Presence,
    set: &[(&'a str, &'a str)],
    remove: &[&'a str],
    incr: Option<(&'a str, i64)>,
) -> Update<'a> {
    Update {
        presence,
        set: set.to_vec(),
        remove: remove.to_vec(),
        incr,
        ttl: TTL,
    }
}

fn key() -> redis_sessions::session::id::SessionKey {
    SessionId::generate().key("sess")
}

/// The store under test and, for Redis, the servers it must outlive.
struct Subject {
    store: Arc<dyn SessionStore>,
    _redis: Option<RedisServer>,
    _cluster: Option<RedisCluster>,
}

fn redis_subject() -> Subject {
    let redis = RedisServer::start();
    let endpoint = RedisEndpoint::from_url(&redis.url()).unwrap();
    let store = RedisStore::new(
        &endpoint,
        &RedisTopology::Standalone,
        4,
        Duration::from_secs(2),
        "sess",
    )
    .unwrap();
    Subject {
        store: Arc::new(store),
        _redis: Some(redis),
        _cluster: None,
    }
}

/// The Redis store on a 3-primary cluster, through the cluster client.
fn cluster_subject() -> Subject {
    let cluster = RedisCluster::start(3, 0);
    let endpoint = RedisEndpoint::from_url(&cluster.nodes[0].url()).unwrap();
    let nodes = cluster
        .nodes
        .iter()
        .map(|n| NodeAddress {
            host: "127.0.0.1".into(),
            port: n.port(),
        })
        .collect();
    let store = RedisStore::new(
        &endpoint,
        &RedisTopology::Cluster { nodes },
        4,
        Duration::from_secs(2),
        "sess",
    )
    .unwrap();
    Subject {
        store: Arc::new(store),
        _redis: None,
        _cluster: Some(cluster),
    }
}

fn memory_subject() -> Subject {
    Subject {
        store: Arc::new(MemoryStore::new(1000)),
        _redis: None,
        _cluster: None,
    }
}

macro_rules! store_suite {
    ($($name:ident($store:ident) $body:block)*) => {
        mod redis_store {
            use super::*;
            $( #[tokio::test] async fn $name() { let subject = redis_subject(); let $store = subject.store.as_ref(); $body } )*
        }
        mod cluster_store {
            use super::*;
            $( #[tokio::test] async fn $name() { let subject = tokio::task::spawn_blocking(cluster_subject).await.unwrap(); let $store = subject.store.as_ref(); $body } )*
        }
        mod memory_store {
            use super::*;
            $( #[tokio::test] async fn $name() { let subject = memory_subject(); let $store = subject.store.as_ref(); $body } )*
        }
    };
}

store_suite! {
    a_new_session_is_created_with_its_fields_and_counter(store) {
        let k = key();
        let done = store.apply(&k, &update(Presence::New, &[("name", "\"ada\"")], &[], Some(("visits", 1)))).await.unwrap();
        assert_eq!(done, Applied::Done(Some(1)));
        let record = store.load(&k, TTL).await.unwrap().unwrap();
        assert_eq!(record.get("name").map(String::as_str), Some("\"ada\""));
        assert_eq!(record.get("visits").map(String::as_str), Some("1"));
    }

    counter_only_sessions_start_at_their_step_and_expire(store) {
        // The first such session teaches the Redis store a payload that the next ones reuse.
        let mut first_visit = update(Presence::New, &[], &[], Some(("visits", 1)));
        first_visit.ttl = Duration::from_secs(1);
        let keys: Vec<SessionKey> = (0..3).map(|_| key()).collect();
        for k in &keys {
            assert_eq!(store.apply(k, &first_visit).await.unwrap(), Applied::Done(Some(1)));
        }
        let other_step = key();
        let done = store.apply(&other_step, &update(Presence::New, &[], &[], Some(("visits", 5)))).await.unwrap();
        assert_eq!(done, Applied::Done(Some(5)));
        assert_eq!(store.load(&other_step, TTL).await.unwrap().unwrap()["visits"], "5");
        let again = key();
        store.apply(&again, &first_visit).await.unwrap();
        for k in keys.iter().chain([&again]) {
            let record = store.load(k, Duration::from_secs(1)).await.unwrap().unwrap();
            assert_eq!((record.len(), record["visits"].as_str()), (1, "1"), "{record:?}");
        }
        tokio::time::sleep(Duration::from_millis(1600)).await;
        for k in keys.iter().chain([&again]) {
            assert!(store.load(k, TTL).await.unwrap().is_none(), "expired");
        }
    }

    a_missing_session_is_reported_and_never_revived(store) {
        let k = key();
        let res = store.apply(&k, &update(Presence::MustExist, &[("a", "1")], &[], Some(("visits", 1)))).await.unwrap();
        assert_eq!(res, Applied::Missing);
        assert!(store.load(&k, TTL).await.unwrap().is_none());
    }

    updates_are_deltas_that_keep_other_fields(store) {
        let k = key();
        store.apply(&k, &update(Presence::New, &[("a", "1"), ("b", "2"), ("c", "3")], &[], None)).await.unwrap();
        store.apply(&k, &update(Presence::MustExist, &[("b", "20")], &["c"], Some(("n", 5)))).await.unwrap();
        let record = store.load(&k, TTL).await.unwrap().unwrap();
        assert_eq!(record.len(), 3, "{record:?}");
        assert_eq!((record["a"].as_str(), record["b"].as_str(), record["n"].as_str()), ("1", "20", "5"));
    }

    concurrent_increments_are_all_counted(store) {
        let k = key();
        store.apply(&k, &update(Presence::New, &[], &[], Some(("n", 0)))).await.unwrap();
        let step = update(Presence::MustExist, &[], &[], Some(("n", 1)));
        let futures = (0..200).map(|_| store.apply(&k, &step));
        // Polled concurrently on this task, the way many requests share a store.
        for r in join_all(futures).await {
            assert!(matches!(r.unwrap(), Applied::Done(Some(_))));
        }
        assert_eq!(store.load(&k, TTL).await.unwrap().unwrap()["n"], "200");
    }

    delete_reports_whether_there_was_a_session(store) {
        let k = key();
        assert!(!store.delete(&k).await.unwrap());
        store.apply(&k, &update(Presence::New, &[("a", "1")], &[], None)).await.unwrap();
        assert!(store.delete(&k).await.unwrap());
        assert!(store.load(&k, TTL).await.unwrap().is_none());
    }

    removing_every_field_removes_the_session(store) {
        let k = key();
        store.apply(&k, &update(Presence::New, &[("a", "1")], &[], None)).await.unwrap();
        store.apply(&k, &update(Presence::MustExist, &[], &["a"], None)).await.unwrap();
        assert!(store.load(&k, TTL).await.unwrap().is_none());
    }

    sessions_expire_and_touches_slide_the_lifetime(store) {
        let (short, slid) = (key(), key());
        let mut u = update(Presence::New, &[("a", "1")], &[], None);
        u.ttl = Duration::from_secs(1);
        store.apply(&short, &u).await.unwrap();
        store.apply(&slid, &u).await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(store.load(&slid, Duration::from_secs(3)).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert!(store.load(&short, TTL).await.unwrap().is_none(), "expired");
        assert!(store.load(&slid, TTL).await.unwrap().is_some(), "the load slid its lifetime");
    }

    a_counter_over_a_non_number_is_an_error_and_changes_nothing(store) {
        let k = key();
        store.apply(&k, &update(Presence::New, &[("n", "\"text\"")], &[], None)).await.unwrap();
        assert!(store.apply(&k, &update(Presence::MustExist, &[], &[], Some(("n", 1)))).await.is_err());
        assert_eq!(store.load(&k, TTL).await.unwrap().unwrap()["n"], "\"text\"");
    }

    a_failing_counter_writes_nothing_not_even_a_new_session(store) {
        let k = key();
        let bad = update(Presence::New, &[("visits", "\"abc\""), ("other", "1")], &[], Some(("visits", 1)));
        assert!(store.apply(&k, &bad).await.is_err());
        assert!(store.load(&k, TTL).await.unwrap().is_none(), "no half-written session without a lifetime");
    }

    a_counter_that_is_set_or_removed_in_the_same_update_starts_from_there(store) {
        let k = key();
        store.apply(&k, &update(Presence::New, &[("n", "5")], &[], None)).await.unwrap();
        let set_then_add = store.apply(&k, &update(Presence::MustExist, &[("n", "10")], &[], Some(("n", 1)))).await.unwrap();
        assert_eq!(set_then_add, Applied::Done(Some(11)));
        let remove_then_add = store.apply(&k, &update(Presence::MustExist, &[], &["n"], Some(("n", 2)))).await.unwrap();
        assert_eq!(remove_then_add, Applied::Done(Some(2)));
    }

    the_first_shared_secret_wins(store) {
        let first = store.shared_secret(SecretString::from("first-candidate")).await.unwrap();
        let second = store.shared_secret(SecretString::from("second-candidate")).await.unwrap();
        assert_eq!(first.expose_secret(), "first-candidate");
        let expected = match store.kind() {
            redis_sessions::session::StoreKind::Redis => "first-candidate",
            // Nothing is shared in memory: each caller keeps its own.
            redis_sessions::session::StoreKind::Memory => "second-candidate",
        };
        assert_eq!(second.expose_secret(), expected);
    }

    ping_answers(store) {
        store.ping().await.unwrap();
    }
}

#[tokio::test]
async fn the_memory_store_is_bounded_and_evicts_the_oldest_first() {
    let store = MemoryStore::new(3);
    let keys: Vec<_> = (0..4).map(|_| key()).collect();
    for k in &keys {
        store
            .apply(k, &update(Presence::New, &[("a", "1")], &[], None))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(store.len(), 3);
    assert!(
        store.load(&keys[0], TTL).await.unwrap().is_none(),
        "the soonest to expire went first"
    );
    assert!(store.load(&keys[3], TTL).await.unwrap().is_some());
}

#[tokio::test]
async fn the_memory_store_drops_expired_sessions_before_evicting_live_ones() {
    let store = MemoryStore::new(2);
    let (old, live, new) = (key(), key(), key());
    let mut short = update(Presence::New, &[("a", "1")], &[], None);
    short.ttl = Duration::from_millis(1);
    store
        .apply(&live, &update(Presence::New, &[("a", "1")], &[], None))
        .await
        .unwrap();
    store.apply(&old, &short).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    store
        .apply(&new, &update(Presence::New, &[("a", "1")], &[], None))
        .await
        .unwrap();
    assert!(
        store.load(&live, TTL).await.unwrap().is_some(),
        "a live session survived"
    );
    assert!(store.load(&new, TTL).await.unwrap().is_some());
}

/// A new session whose slot is being migrated: the source node answers `ASK` (the key is not
/// there), and the transaction must reach the target with `ASKING` before its `MULTI`. One
/// whose slot has moved, while the client's slot map still names the old owner, meets
/// `MOVED` and follows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_follows_ask_during_a_slot_migration_and_moved_after_a_move() {
    let subject = tokio::task::spawn_blocking(cluster_subject).await.unwrap();
    let cluster = subject._cluster.as_ref().expect("a cluster");
    let store = subject.store.as_ref();
    let first_visit = update(Presence::New, &[], &[], Some(("visits", 1)));
    let new_session = |k| store.apply(k, &first_visit);
    // The client learns the slot map before any slot moves.
    let warm = key();
    assert_eq!(new_session(&warm).await.unwrap(), Applied::Done(Some(1)));

    let port = |i: usize| cluster.nodes[i].port();
    let count = cluster.nodes.len();
    let slot_of = |k: &SessionKey| -> i64 {
        run(
            port(0),
            redis::cmd("CLUSTER").arg("KEYSLOT").arg(k.as_str()),
        )
    };
    // Only the owner of a key's slot answers EXISTS; the others answer MOVED.
    let owner_of = |k: &SessionKey| {
        (0..count)
            .find(|&i| {
                redis::cmd("EXISTS")
                    .arg(k.as_str())
                    .query::<i64>(&mut conn(port(i)))
                    .is_ok()
            })
            .expect("a node owns the slot")
    };
    let setslot = |i: usize, slot: i64, how: &str, node: usize| {
        let () = run(
            port(i),
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(how)
                .arg(cluster.id(node)),
        );
    };
    // Reads on `node` as the client would after ASK (ASKING before each command).
    let visits_and_ttl = |node: usize, k: &SessionKey| {
        let mut c = conn(port(node));
        let _: () = redis::cmd("ASKING").query(&mut c).unwrap();
        let visits: Option<i64> = redis::cmd("HGET")
            .arg(k.as_str())
            .arg("visits")
            .query(&mut c)
            .unwrap();
        let _: () = redis::cmd("ASKING").query(&mut c).unwrap();
        let ttl: i64 = redis::cmd("TTL").arg(k.as_str()).query(&mut c).unwrap();
        (visits, ttl)
    };

    // ASK: the slot is half-way between two nodes and the key is on neither.
    let k = key();
    let (slot, from) = tokio::task::block_in_place(|| (slot_of(&k), owner_of(&k)));
    let to = (from + 1) % count;
    tokio::task::block_in_place(|| {
        setslot(to, slot, "IMPORTING", from);
        setslot(from, slot, "MIGRATING", to);
    });
    assert_eq!(new_session(&k).await.unwrap(), Applied::Done(Some(1)));
    let (visits, ttl) = tokio::task::block_in_place(|| visits_and_ttl(to, &k));
    assert_eq!(visits, Some(1), "created on the importing node");
    assert!(
        ttl > 0 && ttl <= TTL.as_secs() as i64,
        "with its TTL: {ttl}"
    );
    tokio::task::block_in_place(|| (0..count).for_each(|i| setslot(i, slot, "NODE", to)));

    // MOVED: another key's (empty) slot is handed to another node behind the client's back.
    let next = key();
    let (slot, from) = tokio::task::block_in_place(|| (slot_of(&next), owner_of(&next)));
    let to = (from + 1) % count;
    tokio::task::block_in_place(|| (0..count).for_each(|i| setslot(i, slot, "NODE", to)));
    assert_eq!(new_session(&next).await.unwrap(), Applied::Done(Some(1)));
    let (visits, ttl) = tokio::task::block_in_place(|| visits_and_ttl(to, &next));
    assert_eq!(visits, Some(1), "created on the slot's new owner");
    assert!(ttl > 0, "with its TTL: {ttl}");

    for k in [&k, &next] {
        let record = store.load(k, TTL).await.unwrap().expect("the session");
        assert_eq!(record.get("visits").map(String::as_str), Some("1"));
    }
}
