//! Prometheus metrics, named so a Flux or controller-runtime user finds what they expect: reconcile counts and
//! durations per kind and result, readiness per object (with the reason, one series per object), what the
//! engine changed, git fetches, webhook requests, promotion phase transitions and leadership.
//!
//! One registry per process. Readiness is not kept as state that could go stale: it is read from the
//! controllers' caches at each scrape (see [`Metrics::encode`]).

use std::sync::{LazyLock, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// An object's readiness as the controllers' caches see it.
pub struct ReadyState {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    /// `Ready` is `True`.
    pub ready: bool,
    /// The `Ready` condition's reason (`Unknown` when there is none yet).
    pub reason: String,
}

pub struct Metrics {
    registry: Registry,
    reconciles: Family<Labels, Counter>,
    reconcile_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    ready: Family<Labels, Gauge>,
    objects: Family<Labels, Counter>,
    drift_corrections: Counter,
    git_fetch_seconds: Histogram,
    git_network_fetches: Counter,
    webhook_requests: Family<Labels, Counter>,
    promotion_transitions: Family<Labels, Counter>,
    leader: Gauge,
    render_sandbox: Gauge,
    /// One scrape at a time: the readiness family is rebuilt for each.
    encoding: Mutex<()>,
}

fn duration_histogram() -> Histogram {
    // 1 ms … ~65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("ferry");
        let m = Metrics {
            reconciles: Family::default(),
            reconcile_seconds: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            ready: Family::default(),
            objects: Family::default(),
            drift_corrections: Counter::default(),
            git_fetch_seconds: duration_histogram(),
            git_network_fetches: Counter::default(),
            webhook_requests: Family::default(),
            promotion_transitions: Family::default(),
            leader: Gauge::default(),
            render_sandbox: Gauge::default(),
            encoding: Mutex::new(()),
            registry: Registry::default(),
        };
        registry.register(
            "reconcile",
            "Reconciles by kind and result (success, error)",
            m.reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "How long reconciles take, by kind",
            m.reconcile_seconds.clone(),
        );
        registry.register(
            "resource_ready",
            "1 when the object's Ready condition is True, else 0; the reason is a label",
            m.ready.clone(),
        );
        registry.register(
            "objects",
            "Objects written or deleted by the engine, by action (created, configured, pruned)",
            m.objects.clone(),
        );
        registry.register(
            "drift_corrections",
            "Syncs that put back objects changed or deleted outside Git",
            m.drift_corrections.clone(),
        );
        registry.register(
            "git_fetch_duration_seconds",
            "How long git fetches take",
            m.git_fetch_seconds.clone(),
        );
        registry.register(
            "git_network_fetches",
            "Fetches that went to the network (not served by a recent fetch of the same mirror)",
            m.git_network_fetches.clone(),
        );
        registry.register(
            "webhook_requests",
            "Push-webhook requests by result",
            m.webhook_requests.clone(),
        );
        registry.register(
            "promotion_transitions",
            "Promotion phase transitions, by the phase entered",
            m.promotion_transitions.clone(),
        );
        registry.register(
            "leader",
            "1 while this process holds the leader lease (or runs without leader election)",
            m.leader.clone(),
        );
        registry.register(
            "render_sandbox",
            "1 when the last render worker raised every wall (Landlock, seccomp, limits), 0 when it could not",
            m.render_sandbox.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn reconciled(&self, kind: &'static str, success: bool, seconds: f64) {
        let result = if success { "success" } else { "error" };
        self.reconciles
            .get_or_create(&vec![("kind", kind.to_string()), ("result", result.to_string())])
            .inc();
        self.reconcile_seconds
            .get_or_create(&vec![("kind", kind.to_string())])
            .observe(seconds);
    }

    /// Objects created, configured (changed) and pruned by one sync.
    pub fn objects_changed(&self, created: usize, configured: usize, pruned: usize) {
        for (action, n) in [("created", created), ("configured", configured), ("pruned", pruned)] {
            if n > 0 {
                self.objects
                    .get_or_create(&vec![("action", action.to_string())])
                    .inc_by(n as u64);
            }
        }
    }

    pub fn drift_corrected(&self) {
        self.drift_corrections.inc();
    }

    pub fn git_fetched(&self, seconds: f64, network: bool) {
        self.git_fetch_seconds.observe(seconds);
        if network {
            self.git_network_fetches.inc();
        }
    }

    pub fn webhook_request(&self, result: &str) {
        self.webhook_requests
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
    }

    pub fn promotion_transition(&self, phase: &str) {
        self.promotion_transitions
            .get_or_create(&vec![("phase", phase.to_string())])
            .inc();
    }

    /// Whether the render sandbox holds (see `render::sandbox`).
    pub fn render_sandbox(&self, holds: bool) {
        self.render_sandbox.set(i64::from(holds));
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// The text exposition, with readiness rebuilt from `ready` (the caches' view now: deleted objects vanish).
    pub fn encode(&self, ready: impl IntoIterator<Item = ReadyState>) -> String {
        let _one_at_a_time = self.encoding.lock().unwrap_or_else(|e| e.into_inner());
        self.ready.clear();
        for r in ready {
            let labels = vec![
                ("kind", r.kind.to_string()),
                ("namespace", r.namespace),
                ("name", r.name),
                ("reason", r.reason),
            ];
            self.ready.get_or_create(&labels).set(i64::from(r.ready));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_is_rebuilt_at_each_scrape() {
        let m = Metrics::new();
        let state = |name: &str, ready: bool, reason: &str| ReadyState {
            kind: "Environment",
            namespace: "team".into(),
            name: name.into(),
            ready,
            reason: reason.into(),
        };
        let text = m.encode([
            state("staging", false, "Progressing"),
            state("production", true, "Succeeded"),
        ]);
        assert!(text.contains(
            r#"ferry_resource_ready{kind="Environment",namespace="team",name="staging",reason="Progressing"} 0"#
        ));
        assert!(text.contains(r#"name="production",reason="Succeeded"} 1"#), "{text}");
        // The reason changed and production is gone: no stale series.
        let text = m.encode([state("staging", true, "Succeeded")]);
        assert!(text.contains(r#"name="staging",reason="Succeeded"} 1"#), "{text}");
        assert!(!text.contains("Progressing") && !text.contains("production"), "{text}");
    }

    #[test]
    fn counters_and_histograms_are_exposed_with_flux_like_names() {
        let m = Metrics::new();
        m.reconciled("Environment", true, 0.25);
        m.reconciled("Environment", false, 0.5);
        m.objects_changed(2, 1, 3);
        m.webhook_request("accepted");
        m.promotion_transition("Succeeded");
        m.git_fetched(0.1, true);
        m.set_leader(true);
        let text = m.encode([]);
        for line in [
            r#"ferry_reconcile_total{kind="Environment",result="success"} 1"#,
            r#"ferry_reconcile_total{kind="Environment",result="error"} 1"#,
            r#"ferry_reconcile_duration_seconds_count{kind="Environment"} 2"#,
            r#"ferry_objects_total{action="created"} 2"#,
            r#"ferry_objects_total{action="pruned"} 3"#,
            r#"ferry_webhook_requests_total{result="accepted"} 1"#,
            r#"ferry_promotion_transitions_total{phase="Succeeded"} 1"#,
            "ferry_git_network_fetches_total 1",
            "ferry_git_fetch_duration_seconds_count 1",
            "ferry_leader 1",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
    }
}
