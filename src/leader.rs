//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several replicas exactly one applies. The
//! others stand by (their webhook receivers still answer) and take over when the leader stops renewing.
//!
//! Expiry is judged the way client-go judges it: by how long *this* process has seen the Lease unchanged, not by
//! comparing the leader's `renewTime` with the local clock, so clock skew between nodes cannot hand the lease to
//! two processes. A leader that cannot renew for `renew_deadline` (shorter than the lease) gives up and the
//! process exits, before a standby may take over.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("the Lease {0} was taken by {1}")]
    Taken(String, String),
    #[error("the Lease {lease} could not be renewed for {deadline:?}: {last_error}")]
    RenewDeadline {
        lease: String,
        deadline: Duration,
        last_error: String,
    },
}

/// How long a lease lasts and how often it is renewed and retried.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// A standby takes over after seeing the Lease unchanged this long.
    pub lease_duration: Duration,
    /// The leader gives up when it could not renew for this long (less than `lease_duration`).
    pub renew_deadline: Duration,
    /// How often the leader renews and a standby looks.
    pub retry_period: Duration,
}

impl Timing {
    /// client-go's proportions (15 s / 10 s / 2 s) for any lease duration.
    pub fn for_lease(lease_duration: Duration) -> Timing {
        let lease_duration = lease_duration.max(Duration::from_secs(2));
        Timing {
            lease_duration,
            renew_deadline: lease_duration * 2 / 3,
            retry_period: (lease_duration / 7).clamp(Duration::from_millis(200), Duration::from_secs(2)),
        }
    }
}

/// What a process may do with the Lease it sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Free, released, ours, or expired: write ourselves in as holder.
    Take,
    /// Someone else holds it and renewed it recently.
    Wait,
}

/// Decides from the Lease's holder and how long it has been seen unchanged. Pure, so the rules are tested
/// without a cluster.
pub fn decide(holder: Option<&str>, me: &str, unchanged_for: Duration, lease_duration: Duration) -> Decision {
    match holder {
        None | Some("") => Decision::Take,
        Some(h) if h == me => Decision::Take,
        Some(_) if unchanged_for >= lease_duration => Decision::Take,
        Some(_) => Decision::Wait,
    }
}

/// One process's side of the election.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
}

impl LeaderElector {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str, timing: Timing) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            timing,
        }
    }

    fn shown(&self) -> String {
        format!("{}/{}", self.api.resource_url(), self.name)
    }

    /// Waits until this process holds the Lease. API errors are retried: a standby keeps standing by.
    pub async fn acquire(&self) {
        // The last (resourceVersion) seen, and since when.
        let mut seen: Option<(String, Instant)> = None;
        loop {
            match self.try_acquire(&mut seen).await {
                Ok(true) => {
                    info!(lease = %self.name, identity = %self.identity, "became the leader");
                    return;
                }
                Ok(false) => {}
                Err(e) => warn!(lease = %self.name, error = %e, "leader election: retrying"),
            }
            tokio::time::sleep(self.timing.retry_period).await;
        }
    }

    async fn try_acquire(&self, seen: &mut Option<(String, Instant)>) -> Result<bool, kube::Error> {
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            return self.create().await;
        };
        let version = lease.resource_version().unwrap_or_default();
        let unchanged_for = match seen {
            Some((v, since)) if *v == version => since.elapsed(),
            _ => {
                *seen = Some((version, Instant::now()));
                Duration::ZERO
            }
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let lease_duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs)
            .unwrap_or(self.timing.lease_duration);
        if decide(
            spec.holder_identity.as_deref(),
            &self.identity,
            unchanged_for,
            lease_duration,
        ) == Decision::Wait
        {
            return Ok(false);
        }
        let taking_over = spec.holder_identity.as_deref() != Some(self.identity.as_str());
        let now = MicroTime(Timestamp::now());
        let mut next = lease;
        next.spec = Some(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.lease_seconds()),
            acquire_time: if taking_over {
                Some(now.clone())
            } else {
                spec.acquire_time
            },
            renew_time: Some(now),
            lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + i32::from(taking_over)),
            ..spec
        });
        // The resourceVersion makes this a compare-and-swap: of two standbys, one wins, the other gets 409.
        match self.api.replace(&self.name, &PostParams::default(), &next).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn create(&self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(self.lease_seconds()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.timing.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    /// Renews the Lease until it is lost: taken by another process, or not renewable for `renew_deadline`.
    /// Only returns then; the caller must stop acting as leader at once.
    pub async fn hold(&self) -> LeaderError {
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(self.timing.retry_period).await;
            match self.renew().await {
                Ok(()) => last_renewed = Instant::now(),
                Err(Renew::Taken(by)) => return LeaderError::Taken(self.shown(), by),
                Err(Renew::Failed(e)) => {
                    if last_renewed.elapsed() >= self.timing.renew_deadline {
                        return LeaderError::RenewDeadline {
                            lease: self.shown(),
                            deadline: self.timing.renew_deadline,
                            last_error: e.to_string(),
                        };
                    }
                    warn!(lease = %self.name, error = %e, "renewing the lease failed; retrying");
                }
            }
        }
    }

    async fn renew(&self) -> Result<(), Renew> {
        let mut lease = self.api.get(&self.name).await.map_err(Renew::Failed)?;
        let mut spec = lease.spec.clone().unwrap_or_default();
        match spec.holder_identity.as_deref() {
            Some(h) if h == self.identity => {}
            other => return Err(Renew::Taken(other.unwrap_or("nobody").to_string())),
        }
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        lease.spec = Some(spec);
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(()),
            Err(e) => Err(Renew::Failed(e)),
        }
    }

    /// Gives the Lease up so a standby takes over at once, instead of after the lease duration.
    pub async fn release(&self) {
        let result = async {
            let mut lease = self.api.get(&self.name).await?;
            let Some(mut spec) = lease.spec.clone() else {
                return Ok(());
            };
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return Ok(());
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            lease.spec = Some(spec);
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
        .await;
        match result {
            Ok(()) => info!(lease = %self.name, "released the lease"),
            Err(e) => warn!(lease = %self.name, error = %e, "releasing the lease failed; it expires by itself"),
        }
    }
}

enum Renew {
    Taken(String),
    Failed(kube::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);

    #[test]
    fn a_free_released_or_own_lease_is_taken() {
        assert_eq!(decide(None, "a", Duration::ZERO, LEASE), Decision::Take);
        assert_eq!(decide(Some(""), "a", Duration::ZERO, LEASE), Decision::Take);
        assert_eq!(decide(Some("a"), "a", Duration::ZERO, LEASE), Decision::Take);
    }

    #[test]
    fn another_holder_is_waited_for_until_its_lease_ran_out_unchanged() {
        assert_eq!(decide(Some("b"), "a", Duration::ZERO, LEASE), Decision::Wait);
        assert_eq!(
            decide(Some("b"), "a", LEASE - Duration::from_millis(1), LEASE),
            Decision::Wait
        );
        assert_eq!(decide(Some("b"), "a", LEASE, LEASE), Decision::Take);
    }

    #[test]
    fn timing_keeps_client_go_proportions() {
        let t = Timing::for_lease(Duration::from_secs(15));
        assert_eq!(t.renew_deadline, Duration::from_secs(10));
        assert_eq!(t.retry_period, Duration::from_secs(2));
        let short = Timing::for_lease(Duration::from_secs(3));
        assert!(short.renew_deadline < short.lease_duration);
        assert!(short.retry_period < short.renew_deadline / 2);
        assert_eq!(Timing::for_lease(Duration::ZERO).lease_duration, Duration::from_secs(2));
    }
}
