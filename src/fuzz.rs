//! Time-bounded fuzzing of the parsers that take outside input, on proptest's generators.
//!
//! `cargo fuzz` needs a nightly toolchain; these run on stable. Each `fuzz_*` test is
//! `#[ignore]`d so the normal suite stays quick; `ci/fuzz.sh` runs them for `FUZZ_SECONDS`
//! each (default 30) with a fresh random seed, and any panic fails with the input printed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, TestRunner};

/// Feeds generated inputs to `target` until the time budget is spent.
pub(crate) fn fuzz_for<S>(name: &str, strategy: S, target: impl Fn(&S::Value))
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let seconds = std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut runner = TestRunner::new(Config::default());
    let mut runs: u64 = 0;
    while Instant::now() < deadline {
        let input = match strategy.new_tree(&mut runner) {
            Ok(tree) => tree.current(),
            Err(reason) => panic!("{name}: generator failed: {reason}"),
        };
        if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
            panic!("{name}: crashed after {runs} runs on input {input:?}");
        }
        runs += 1;
    }
    println!("fuzz {name}: {runs} inputs in {seconds} s, no crash");
    assert!(runs > 0, "{name}: no input was tried");
}
