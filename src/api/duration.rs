//! Go-style durations (`30s`, `5m`, `1h30m`), the form Kubernetes users already write in Flux and Argo CD.

use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid duration {input:?}: {why} (expected e.g. 30s, 5m, 1h30m)")]
pub struct DurationError {
    pub input: String,
    pub why: &'static str,
}

/// Regex used in the CRD schema so the apiserver rejects malformed durations before Ferry sees them.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = |why| DurationError {
        input: input.to_string(),
        why,
    };
    if input.is_empty() {
        return Err(err("empty"));
    }
    let mut total = 0f64;
    let mut rest = input;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| err("missing unit"))?;
        if num_len == 0 {
            return Err(err("missing number"));
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| err("bad number"))?;
        rest = &rest[num_len..];
        let (unit, len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else {
            return Err(err("unknown unit"));
        };
        total += value * unit;
        rest = &rest[len..];
    }
    // `Duration::from_secs_f64` panics past its range, and a reconcile that panics takes the controller with
    // it: any tenant could stop Ferry with `interval: 9999999999999h`. Go's own limit (~292 years) applies.
    if !total.is_finite() || total > MAX_SECONDS {
        return Err(err("too long (at most 2562047h)"));
    }
    Duration::try_from_secs_f64(total).map_err(|_| err("too long (at most 2562047h)"))
}

/// Go's `time.Duration` maximum, in seconds: what Flux and Kubernetes accept for the same field.
const MAX_SECONDS: f64 = 9_223_372_036.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    }

    #[test]
    fn rejects_malformed_durations() {
        for bad in [
            "",
            "10",
            "s",
            "1x",
            "1m-",
            "-1s",
            "2562048h",
            "99999999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} should be rejected");
        }
    }
}
