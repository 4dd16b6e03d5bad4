//! Leader election with a coordination.k8s.io Lease: only the holder runs the controller (and so
//! writes); every replica serves health, metrics and the webhook.
//!
//! The semantics are client-go's (`k8s.io/client-go/tools/leaderelection`), which stay correct
//! when clocks disagree and calls are slow:
//!
//! - **Observed time.** A candidate never reads the holder's clock (`renewTime` is written for
//!   people). It notes, on its own monotonic clock, when it first saw the current Lease record;
//!   the record has expired once it has stayed unchanged for `leaseDurationSeconds` since then.
//!   A holder whose wall clock is an hour behind or ahead changes nothing.
//! - **Renew deadline.** The holder's term lasts `renew_deadline` (shorter than the lease
//!   duration) from the moment it *sent* its last successful write. No candidate can have seen
//!   that write earlier, so none can take over before `sent + lease_duration`: the holder steps
//!   down (the controller stops and the process exits) `lease_duration - renew_deadline` before
//!   the earliest takeover. It retries every `retry_period` until then.
//! - **Bounded calls.** Every API call of the election is bounded by a timeout (the time left in
//!   the term while leading), so a hung connection cannot keep a leader that no longer is one.
//! - **A fence on writes.** [`fenced`] wraps the controller's client: a write sent when the term
//!   has run out is refused before it leaves the process. A process frozen past its term (SIGSTOP,
//!   a stalled VM, a long GC-like pause) finds its term over when it resumes and writes nothing,
//!   even from a reconcile that was half-way through. What is left is the instant between the
//!   check and the bytes leaving the socket, which no lease without server-side fencing closes.
//!
//! Updates carry the Lease's resourceVersion, so two candidates can never both win a takeover:
//! the API server refuses the second write with a conflict.
//!
//! The decisions ([`Observer::step`], [`Term`]) are pure and unit-tested; [`Elector`] does the I/O.

use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::time::Instant;
use tracing::{info, warn};

/// The name of the leader Lease, in the operator's namespace.
pub const LEASE_NAME: &str = "meshop-leader";

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// How long a record must stay unchanged (as observed) before a candidate takes over.
    pub lease_duration: Duration,
    /// How long a term lasts after the last successful renewal was sent; shorter than
    /// `lease_duration`.
    pub renew_deadline: Duration,
    /// How often the holder renews and a candidate looks.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// client-go's proportions (15 s lease, 10 s renew deadline, 2 s retry period), scaled to
    /// `lease_duration`.
    pub fn new(namespace: &str, name: &str, identity: &str, lease_duration: Duration) -> Self {
        LeaseConfig {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration,
            renew_deadline: lease_duration * 2 / 3,
            retry_period: lease_duration * 2 / 15,
        }
    }

    /// Why this configuration cannot elect safely, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.identity.is_empty() {
            return Err("the leader election identity is empty".into());
        }
        if self.lease_duration.as_secs() < 1 {
            return Err("the lease duration must be at least one second".into());
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(format!(
                "the renew deadline ({:?}) must be shorter than the lease duration ({:?})",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return Err(format!(
                "the retry period ({:?}) must be positive and shorter than the renew deadline ({:?})",
                self.retry_period, self.renew_deadline
            ));
        }
        Ok(())
    }
}

/// The Lease record as the election compares it: any change of any field is a sign of life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub holder: String,
    pub lease_duration: Duration,
    pub acquire_time: Option<Timestamp>,
    pub renew_time: Option<Timestamp>,
    pub transitions: i32,
}

impl Record {
    pub fn from_spec(spec: &LeaseSpec) -> Record {
        Record {
            holder: spec.holder_identity.clone().unwrap_or_default(),
            lease_duration: Duration::from_secs(
                spec.lease_duration_seconds.unwrap_or(0).max(0) as u64
            ),
            acquire_time: spec.acquire_time.as_ref().map(|t| t.0),
            renew_time: spec.renew_time.as_ref().map(|t| t.0),
            transitions: spec.lease_transitions.unwrap_or(0),
        }
    }
}

/// What to do after reading the Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// There is no Lease: create it, held by us.
    Create,
    /// We hold it: renew (same acquire time and transitions).
    Renew,
    /// Nobody holds it, or the holder's record has not changed for a whole lease duration of
    /// our own clock: take it over (one more transition).
    TakeOver { from: String },
    /// Another holder's record is fresh: wait. It expires at `expires` unless it changes.
    Follow { holder: String, expires: Instant },
}

/// A candidate's memory of the record: what it last saw and when (its monotonic clock).
#[derive(Debug)]
pub struct Observer {
    identity: String,
    seen: Option<(Record, Instant)>,
}

impl Observer {
    pub fn new(identity: &str) -> Observer {
        Observer {
            identity: identity.into(),
            seen: None,
        }
    }

    /// Decides from the Lease's record (None: no Lease) read at `now`.
    pub fn step(&mut self, record: Option<&Record>, now: Instant) -> Step {
        let Some(record) = record else {
            self.seen = None;
            return Step::Create;
        };
        let observed_at = match &self.seen {
            Some((seen, at)) if seen == record => *at,
            _ => {
                self.seen = Some((record.clone(), now));
                now
            }
        };
        if record.holder == self.identity {
            return Step::Renew;
        }
        if record.holder.is_empty() {
            return Step::TakeOver {
                from: String::new(),
            };
        }
        let expires = observed_at + record.lease_duration;
        if now < expires {
            Step::Follow {
                holder: record.holder.clone(),
                expires,
            }
        } else {
            Step::TakeOver {
                from: record.holder.clone(),
            }
        }
    }
}

/// A leader's term: it lasts `renew_deadline` from when the last successful write was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Term {
    pub ends: Instant,
}

impl Term {
    /// The term a successful write sent at `sent` gives.
    pub fn after_write(sent: Instant, renew_deadline: Duration) -> Term {
        Term {
            ends: sent + renew_deadline,
        }
    }

    pub fn holds(&self, now: Instant) -> bool {
        now < self.ends
    }
}

/// The current term, shared by the elector and the writes it guards. Empty: not leading.
#[derive(Clone, Debug, Default)]
pub struct Fence {
    term: Arc<Mutex<Option<Term>>>,
}

impl Fence {
    pub fn holds(&self, now: Instant) -> bool {
        self.term().is_some_and(|t| t.holds(now))
    }

    pub fn term(&self) -> Option<Term> {
        *self.term.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, term: Option<Term>) {
        *self.term.lock().unwrap_or_else(|e| e.into_inner()) = term;
    }
}

/// The error of a write refused by the fence.
#[derive(Debug, thiserror::Error)]
#[error("not leading: the leader lease's term has run out, so this replica sends no write")]
pub struct NotLeading;

/// `client`, with every write (any method but GET, HEAD and OPTIONS) refused unless `fence`
/// holds a term at the moment it is sent.
pub fn fenced(client: Client, fence: Fence) -> Client {
    let default_namespace = client.default_namespace().to_string();
    Client::new(
        FencedService {
            inner: client,
            fence,
        },
        default_namespace,
    )
}

#[derive(Clone)]
struct FencedService {
    inner: Client,
    fence: Fence,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<hyper::Request<kube::client::Body>> for FencedService {
    type Response = hyper::Response<kube::client::Body>;
    type Error = BoxError;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: hyper::Request<kube::client::Body>) -> Self::Future {
        let write = !matches!(
            *request.method(),
            hyper::Method::GET | hyper::Method::HEAD | hyper::Method::OPTIONS
        );
        if write && !self.fence.holds(Instant::now()) {
            return Box::pin(std::future::ready(Err(Box::new(NotLeading) as BoxError)));
        }
        let inner = self.inner.clone();
        Box::pin(async move {
            inner
                .send(request)
                .await
                .map_err(|e| Box::new(e) as BoxError)
        })
    }
}

/// Why one attempt did not end holding the Lease.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error("{0}")]
    Api(#[from] kube::Error),
    #[error("the API server did not answer within {0:?}")]
    Timeout(Duration),
}

pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    observer: Mutex<Observer>,
    fence: Fence,
}

impl Elector {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Elector {
            api: Api::namespaced(client, &config.namespace),
            observer: Mutex::new(Observer::new(&config.identity)),
            config,
            fence: Fence::default(),
        }
    }

    /// The term this elector holds, for [`fenced`].
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// One attempt to acquire or renew, every call bounded by `budget`. Ok(true): this process
    /// holds the Lease, and the term runs from when the successful write was sent.
    pub async fn try_acquire_or_renew(&self, budget: Duration) -> Result<bool, AttemptError> {
        let bounded = |d: Duration| d.min(budget);
        let deadline = Instant::now() + budget;
        let read = tokio::time::timeout(bounded(budget), self.api.get_opt(&self.config.name))
            .await
            .map_err(|_| AttemptError::Timeout(budget))??;
        let now = Instant::now();
        let record = read
            .as_ref()
            .map(|l| Record::from_spec(&l.spec.clone().unwrap_or_default()));
        let step = self
            .observer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .step(record.as_ref(), now);
        let wall = MicroTime(Timestamp::now());
        let spec = |acquire: Option<MicroTime>, transitions: i32| LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.lease_duration.as_secs() as i32),
            acquire_time: Some(acquire.unwrap_or_else(|| wall.clone())),
            renew_time: Some(wall.clone()),
            lease_transitions: Some(transitions),
            ..Default::default()
        };
        let (lease, previous) = match (&step, read) {
            (Step::Follow { .. }, _) => return Ok(false),
            (Step::Create, _) | (_, None) => (
                Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(spec(None, 0)),
                },
                None,
            ),
            (Step::Renew, Some(mut lease)) => {
                let current = lease.spec.clone().unwrap_or_default();
                lease.spec = Some(spec(
                    current.acquire_time,
                    current.lease_transitions.unwrap_or(0),
                ));
                (lease, None)
            }
            (Step::TakeOver { from }, Some(mut lease)) => {
                let current = lease.spec.clone().unwrap_or_default();
                lease.spec = Some(spec(None, current.lease_transitions.unwrap_or(0) + 1));
                (lease, Some(from.clone()))
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(AttemptError::Timeout(budget));
        }
        let sent = Instant::now();
        let pp = PostParams::default();
        let written = if lease.metadata.resource_version.is_none() {
            tokio::time::timeout(left, self.api.create(&pp, &lease)).await
        } else {
            tokio::time::timeout(left, self.api.replace(&self.config.name, &pp, &lease)).await
        };
        match written.map_err(|_| AttemptError::Timeout(budget))? {
            Ok(_) => {
                self.fence
                    .set(Some(Term::after_write(sent, self.config.renew_deadline)));
                if let Some(previous) = previous {
                    info!(identity = %self.config.identity, %previous, "acquired leadership");
                }
                Ok(true)
            }
            // Someone else wrote first: the next read tells who.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until this process holds the Lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew(self.config.renew_deadline).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => warn!(error = %e, "leader election"),
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Keeps the Lease renewed; returns when the term ran out without a successful renewal (the
    /// caller must then stop writing; the fence already refuses writes).
    pub async fn hold(&self) {
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            let Some(term) = self.fence.term() else {
                return;
            };
            let now = Instant::now();
            if !term.holds(now) {
                warn!(identity = %self.config.identity, "the leader lease's term ran out without a renewal");
                self.fence.set(None);
                return;
            }
            match self
                .try_acquire_or_renew(term.ends.saturating_duration_since(now))
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    info!(identity = %self.config.identity, "another replica holds the leader lease");
                    self.fence.set(None);
                    return;
                }
                Err(e) => warn!(error = %e, "renewing the leader lease"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);

    fn record(holder: &str, renewed: Timestamp) -> Record {
        Record {
            holder: holder.into(),
            lease_duration: LEASE,
            acquire_time: Some(renewed),
            renew_time: Some(renewed),
            transitions: 0,
        }
    }

    fn wall(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn config_follows_client_go_proportions_and_checks_them() {
        let c = LeaseConfig::new("ns", "l", "me", LEASE);
        assert_eq!(c.renew_deadline, Duration::from_secs(10));
        assert_eq!(c.retry_period, Duration::from_secs(2));
        assert_eq!(c.check(), Ok(()));
        let c = LeaseConfig::new("ns", "l", "me", Duration::from_secs(3));
        assert_eq!(c.check(), Ok(()), "the smallest lease `meshop run` accepts");
        let bad = LeaseConfig {
            renew_deadline: LEASE,
            ..LeaseConfig::new("ns", "l", "me", LEASE)
        };
        assert!(bad.check().unwrap_err().contains("renew deadline"));
        let bad = LeaseConfig {
            retry_period: Duration::from_secs(10),
            ..LeaseConfig::new("ns", "l", "me", LEASE)
        };
        assert!(bad.check().unwrap_err().contains("retry period"));
        assert!(LeaseConfig::new("ns", "l", "", LEASE).check().is_err());
    }

    #[test]
    fn no_lease_is_created_and_our_own_is_renewed() {
        let t0 = Instant::now();
        let mut o = Observer::new("me");
        assert_eq!(o.step(None, t0), Step::Create);
        let ours = record("me", wall("2026-12-07T10:00:00Z"));
        assert_eq!(o.step(Some(&ours), t0), Step::Renew);
        let free = record("", wall("2026-12-07T10:00:00Z"));
        assert_eq!(
            o.step(Some(&free), t0),
            Step::TakeOver {
                from: String::new()
            }
        );
    }

    /// The holder's clock is an hour behind ours: its renewTime looks long expired, yet it
    /// renews. A candidate that compared clocks would take over at once (two leaders); going
    /// by when it saw the record change, it follows as long as the record keeps changing.
    #[test]
    fn a_holder_with_a_slow_wall_clock_keeps_its_lease_while_it_renews() {
        let t0 = Instant::now();
        let mut o = Observer::new("candidate");
        let behind = wall("2026-12-07T09:00:00Z");
        let r = record("holder", behind);
        assert!(matches!(o.step(Some(&r), t0), Step::Follow { .. }));
        // Renewed every 2 s (as the holder's clock sees it) for a minute of ours.
        for i in 1..30 {
            let r = record("holder", behind + std::time::Duration::from_secs(2 * i));
            let now = t0 + Duration::from_secs(2 * i);
            assert!(
                matches!(o.step(Some(&r), now), Step::Follow { .. }),
                "renewal {i} was taken over"
            );
        }
    }

    /// The holder's clock is an hour ahead: its renewTime looks valid for an hour. A candidate
    /// that compared clocks would wait an hour after the holder died; this one waits one lease.
    #[test]
    fn a_dead_holder_with_a_fast_wall_clock_loses_its_lease_after_one_duration() {
        let t0 = Instant::now();
        let mut o = Observer::new("candidate");
        let r = record("holder", wall("2026-12-07T11:00:00Z"));
        let Step::Follow { holder, expires } = o.step(Some(&r), t0) else {
            panic!("a fresh record is followed");
        };
        assert_eq!(holder, "holder");
        assert_eq!(expires, t0 + LEASE);
        assert!(matches!(
            o.step(Some(&r), t0 + LEASE - Duration::from_millis(1)),
            Step::Follow { .. }
        ));
        assert_eq!(
            o.step(Some(&r), t0 + LEASE),
            Step::TakeOver {
                from: "holder".into()
            }
        );
    }

    #[test]
    fn a_changed_record_restarts_the_observed_lease() {
        let t0 = Instant::now();
        let mut o = Observer::new("candidate");
        let first = record("holder", wall("2026-12-07T10:00:00Z"));
        o.step(Some(&first), t0);
        // Only the transitions moved: still a sign of life.
        let second = Record {
            transitions: 1,
            ..first.clone()
        };
        let later = t0 + Duration::from_secs(10);
        let Step::Follow { expires, .. } = o.step(Some(&second), later) else {
            panic!("a changed record is followed");
        };
        assert_eq!(expires, later + LEASE);
        // The record's own leaseDurationSeconds counts, not the candidate's setting.
        let short = Record {
            lease_duration: Duration::from_secs(3),
            ..second.clone()
        };
        let Step::Follow { expires, .. } = o.step(Some(&short), later) else {
            panic!("followed");
        };
        assert_eq!(expires, later + Duration::from_secs(3));
        // A deleted Lease forgets what was seen.
        assert_eq!(o.step(None, later), Step::Create);
    }

    /// The term ends `renew_deadline` after the write was sent: before any candidate that saw
    /// the write (at or after `sent`) can take over (`sent + lease_duration` at the earliest).
    #[test]
    fn a_term_ends_before_the_earliest_takeover() {
        let c = LeaseConfig::new("ns", "l", "me", LEASE);
        let sent = Instant::now();
        let term = Term::after_write(sent, c.renew_deadline);
        assert!(term.holds(sent));
        assert!(term.holds(sent + c.renew_deadline - Duration::from_millis(1)));
        assert!(!term.holds(sent + c.renew_deadline));
        // A candidate observing the write at `sent` takes over at `sent + LEASE` at the earliest.
        let mut o = Observer::new("candidate");
        let r = record("me", wall("2026-12-07T10:00:00Z"));
        let Step::Follow { expires, .. } = o.step(Some(&r), sent) else {
            panic!("followed");
        };
        assert!(term.ends < expires);
        assert_eq!(
            expires - term.ends,
            c.lease_duration - c.renew_deadline,
            "the margin"
        );
    }

    #[test]
    fn the_fence_holds_only_during_a_term() {
        let fence = Fence::default();
        let now = Instant::now();
        assert!(!fence.holds(now), "no term: not leading");
        fence.set(Some(Term::after_write(now, Duration::from_secs(10))));
        assert!(fence.holds(now + Duration::from_secs(9)));
        assert!(!fence.holds(now + Duration::from_secs(10)));
        fence.set(None);
        assert!(!fence.holds(now));
    }
}
