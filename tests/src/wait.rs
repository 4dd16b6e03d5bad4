//! The one way the harness and the tests wait for something: poll a check until it yields a
//! value, and on timeout say what was awaited and what the last poll saw.
//!
//! ```no_run
//! # async fn t(api: kube::Api<k8s_openapi::api::core::v1::Service>) {
//! use std::time::Duration;
//! let uid = meshop_testenv::wait_until("Service web exists", Duration::from_secs(30), || async {
//!     let svc = api.get_opt("web").await?;   // an API error is just "not yet"
//!     let svc = svc.ok_or_else(|| anyhow::anyhow!("no Service web"))?;
//!     Ok(svc.metadata.uid)
//! })
//! .await;
//! # }
//! ```

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

/// First pause between polls; it grows by half each time up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_millis(500);

/// Wraps an error from a check that makes further polling pointless (a process died): polling
/// stops at once with it instead of waiting out the timeout.
#[derive(Debug)]
pub struct GiveUp(pub anyhow::Error);

impl std::fmt::Display for GiveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for GiveUp {}

/// Polls `check` until it returns `Ok(value)` and returns the value. An `Err` means "not yet" and
/// describes the state seen; after `timeout` the last one is reported as
/// `<what>: not reached within <timeout>; last seen: <state>`. An `Err` wrapping [`GiveUp`]
/// ends the wait at once.
pub async fn poll_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let start = Instant::now();
    let mut pause = FIRST_PAUSE;
    loop {
        let state = match check().await {
            Ok(value) => return Ok(value),
            Err(e) if e.is::<GiveUp>() => return Err(anyhow!("{what}: {e:#}")),
            Err(e) => e,
        };
        if start.elapsed() >= timeout {
            return Err(anyhow!(
                "{what}: not reached within {timeout:?}; last seen: {state:#}"
            ));
        }
        tokio::time::sleep(pause.min(timeout.saturating_sub(start.elapsed()))).await;
        pause = (pause * 3 / 2).min(MAX_PAUSE);
    }
}

/// [`poll_until`] for tests: returns the value, or fails the test with the description and the
/// last state seen.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    match poll_until(what, timeout, check).await {
        Ok(value) => value,
        Err(e) => panic!("{e:#}"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use anyhow::bail;

    use super::*;

    #[tokio::test]
    async fn returns_the_value_once_the_check_holds() {
        let polls = AtomicU32::new(0);
        let got = wait_until("third poll", Duration::from_secs(5), || async {
            let n = polls.fetch_add(1, Ordering::SeqCst) + 1;
            if n < 3 {
                bail!("poll {n}");
            }
            Ok(n * 10)
        })
        .await;
        assert_eq!(got, 30);
    }

    #[tokio::test]
    async fn a_timeout_names_the_wait_and_the_last_state() {
        let polls = AtomicU32::new(0);
        let err = poll_until("never", Duration::from_millis(300), || async {
            let n = polls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(anyhow!("state {n}"))
        })
        .await
        .unwrap_err()
        .to_string();
        let last = polls.load(Ordering::SeqCst) - 1;
        assert!(last >= 1, "polled only once");
        assert_eq!(
            err,
            format!("never: not reached within 300ms; last seen: state {last}")
        );
    }

    #[tokio::test]
    async fn give_up_ends_the_wait_at_once() {
        let start = Instant::now();
        let err = poll_until("process up", Duration::from_secs(30), || async {
            Err::<(), _>(GiveUp(anyhow!("etcd exited")).into())
        })
        .await
        .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(err.to_string(), "process up: etcd exited");
    }

    #[test]
    #[should_panic(expected = "ready: not reached within 100ms; last seen: still pending")]
    fn wait_until_fails_the_test_with_the_message() {
        crate::block_on(wait_until("ready", Duration::from_millis(100), || async {
            Err::<(), _>(anyhow!("still pending"))
        }));
    }
}
