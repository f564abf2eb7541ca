//! Polling for a condition with a deadline: "poll, don't sleep".
//!
//! A test that sleeps for a fixed time is slow when the system is fast and flaky when it is
//! slow; a test that polls a condition every few milliseconds up to a generous timeout is
//! neither. This is the one helper for that.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often [`wait_for`] (and the harness's own readiness checks) look again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `f` every [`POLL_INTERVAL`] until it returns `true`, for at most `timeout`.
///
/// `f` is always called at least once, even with a zero timeout. A call of `f` that is
/// still running when the deadline passes is abandoned. On timeout the error names `what`,
/// so write it as the thing awaited: `"the order to be CONFIRMED"`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        // `tokio::time::timeout` polls the future once before it looks at the clock, so a
        // condition that is already true passes even when no time is left.
        match tokio::time::timeout_at(deadline, f()).await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(_) => anyhow::bail!(
                "timed out after {timeout:?} waiting for {what} (the last check did not finish)"
            ),
        }
        let now = Instant::now();
        if now >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep_until((now + POLL_INTERVAL).min(deadline)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn returns_once_the_condition_holds() {
        let calls = Arc::new(AtomicU32::new(0));
        let result = wait_for("the third call", Duration::from_secs(5), || {
            let calls = Arc::clone(&calls);
            async move { calls.fetch_add(1, Ordering::SeqCst) + 1 >= 3 }
        })
        .await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn times_out_naming_what_it_waited_for() {
        let started = std::time::Instant::now();
        let result = wait_for("never", Duration::from_millis(100), || async { false }).await;
        let err = result.expect_err("a condition that never holds must time out");
        assert!(err.to_string().contains("never"), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn checks_once_even_with_zero_timeout() {
        let result = wait_for("true", Duration::ZERO, || async { true }).await;
        assert!(result.is_ok(), "{result:?}");
    }

    #[tokio::test]
    async fn abandons_a_check_that_hangs() {
        let result = wait_for("a hanging check", Duration::from_millis(50), || {
            std::future::pending::<bool>()
        })
        .await;
        assert!(result.is_err());
    }
}
