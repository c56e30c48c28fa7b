//! Time gates before a promotion may apply: soak time upstream, weekly windows and absolute freezes (UTC).

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::api::{Freeze, PromotionWindow};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GateError {
    #[error("promotion window {0:?}: {1}")]
    Window(String, String),
    #[error("freeze {0:?}: {1}")]
    Freeze(String, String),
}

/// Whether a promotion may start now.
#[derive(Debug, PartialEq)]
pub enum WindowState {
    Open,
    /// Inside a freeze; it ends at `until`.
    Frozen {
        until: Timestamp,
        reason: Option<String>,
    },
    /// Outside every window; the next one opens at `opens_at` (None: never within a week of freezes).
    Closed {
        opens_at: Option<Timestamp>,
    },
}

const DAY: i64 = 86_400;
const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// A window parsed to minutes of the day and a day mask.
struct Weekly {
    days: [bool; 7],
    start: i64,
    end: i64,
}

fn minutes(s: &str) -> Option<i64> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    ((0..=24).contains(&h) && (0..60).contains(&m) && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
}

fn weekday_index(day: &str) -> Option<usize> {
    let day = day.trim();
    DAYS.iter()
        .position(|d| d.eq_ignore_ascii_case(day) || d.eq_ignore_ascii_case(day.get(..3).unwrap_or("")))
}

fn parse_window(w: &PromotionWindow) -> Result<Weekly, GateError> {
    let name = format!("{} {}-{}", w.days.join(","), w.start, w.end);
    let bad = |what: &str| GateError::Window(name.clone(), what.to_string());
    let start = minutes(&w.start)
        .filter(|m| *m < 24 * 60)
        .ok_or_else(|| bad("start is not HH:MM"))?;
    let end = minutes(&w.end).ok_or_else(|| bad("end is not HH:MM"))?;
    let mut days = [w.days.is_empty(); 7];
    for d in &w.days {
        days[weekday_index(d).ok_or_else(|| bad(&format!("unknown day {d:?}; use Mon … Sun")))?] = true;
    }
    Ok(Weekly { days, start, end })
}

/// 1970-01-01 was a Thursday (index 3 with Monday = 0).
fn weekday_and_minute(t: i64) -> (usize, i64) {
    let day = t.div_euclid(DAY);
    (((day + 3).rem_euclid(7)) as usize, t.rem_euclid(DAY) / 60)
}

impl Weekly {
    fn contains(&self, t: i64) -> bool {
        let (day, minute) = weekday_and_minute(t);
        if self.start < self.end {
            self.days[day] && minute >= self.start && minute < self.end
        } else {
            // Wraps past midnight: the part before midnight belongs to `day`, the part after to the day before.
            (self.days[day] && minute >= self.start) || (self.days[(day + 6) % 7] && minute < self.end)
        }
    }
}

fn parse_freeze(f: &Freeze) -> Result<(i64, i64), GateError> {
    let bad = |what: String| GateError::Freeze(format!("{} – {}", f.from, f.to), what);
    let from: Timestamp = f.from.parse().map_err(|e| bad(format!("from: {e}")))?;
    let to: Timestamp = f.to.parse().map_err(|e| bad(format!("to: {e}")))?;
    if to <= from {
        return Err(bad("to must be after from".into()));
    }
    Ok((from.as_second(), to.as_second()))
}

/// Checks every window and freeze, so a bad one is reported when the Environment is reconciled.
pub fn validate(windows: &[PromotionWindow], freezes: &[Freeze]) -> Result<(), GateError> {
    windows.iter().try_for_each(|w| parse_window(w).map(|_| ()))?;
    freezes.iter().try_for_each(|f| parse_freeze(f).map(|_| ()))
}

/// Where `now` falls among the windows and freezes.
pub fn window_state(now: Timestamp, windows: &[PromotionWindow], freezes: &[Freeze]) -> Result<WindowState, GateError> {
    let weekly = windows.iter().map(parse_window).collect::<Result<Vec<_>, _>>()?;
    let frozen = freezes
        .iter()
        .map(|f| parse_freeze(f).map(|(a, b)| (a, b, f.reason.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    let open_at = |t: i64| {
        let in_window = weekly.is_empty() || weekly.iter().any(|w| w.contains(t));
        in_window && !frozen.iter().any(|(a, b, _)| (*a..*b).contains(&t))
    };
    let t = now.as_second();
    if let Some((_, until, reason)) = frozen
        .iter()
        .filter(|(a, b, _)| (*a..*b).contains(&t))
        .max_by_key(|f| f.1)
    {
        return Ok(WindowState::Frozen {
            until: Timestamp::from_second(*until).unwrap_or(now),
            reason: reason.clone(),
        });
    }
    if open_at(t) {
        return Ok(WindowState::Open);
    }
    // The state only changes at a window start or a freeze end: try those, soonest first, for eight days.
    let day0 = t.div_euclid(DAY);
    let mut candidates: Vec<i64> = (0..9)
        .flat_map(|d| weekly.iter().map(move |w| (day0 + d) * DAY + w.start * 60))
        .chain(frozen.iter().map(|(_, b, _)| *b))
        .filter(|c| *c > t)
        .collect();
    candidates.sort_unstable();
    let opens_at = candidates
        .into_iter()
        .find(|c| open_at(*c))
        .and_then(|c| Timestamp::from_second(c).ok());
    Ok(WindowState::Closed { opens_at })
}

/// How much longer a revision verified at `verified_at` must soak; None when it has soaked enough.
pub fn soak_remaining(verified_at: Timestamp, soak: Duration, now: Timestamp) -> Option<Duration> {
    let elapsed = now.as_second() - verified_at.as_second();
    let soak = soak.as_secs() as i64;
    (elapsed < soak).then(|| Duration::from_secs((soak - elapsed) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn weekdays_9_to_16() -> Vec<PromotionWindow> {
        vec![PromotionWindow {
            days: ["Mon", "Tue", "Wed", "Thu", "Fri"].map(String::from).to_vec(),
            start: "09:00".into(),
            end: "16:00".into(),
        }]
    }

    #[test]
    fn weekday_of_known_dates() {
        // 2026-11-25 is a Wednesday.
        assert_eq!(weekday_and_minute(at("2026-11-25T10:30:00Z").as_second()), (2, 630));
        assert_eq!(weekday_and_minute(at("2026-11-29T00:00:00Z").as_second()).0, 6);
    }

    #[test]
    fn office_hours_window() {
        let w = weekdays_9_to_16();
        assert_eq!(window_state(at("2026-11-25T10:00:00Z"), &w, &[]), Ok(WindowState::Open));
        assert_eq!(
            window_state(at("2026-11-25T16:00:00Z"), &w, &[]),
            Ok(WindowState::Closed {
                opens_at: Some(at("2026-11-26T09:00:00Z"))
            }),
            "end is exclusive"
        );
        // Friday evening: next opening is Monday morning.
        assert_eq!(
            window_state(at("2026-11-27T18:00:00Z"), &w, &[]),
            Ok(WindowState::Closed {
                opens_at: Some(at("2026-11-30T09:00:00Z"))
            })
        );
    }

    #[test]
    fn windows_wrap_past_midnight() {
        let w = vec![PromotionWindow {
            days: vec!["Sat".into()],
            start: "22:00".into(),
            end: "02:00".into(),
        }];
        assert_eq!(window_state(at("2026-11-28T23:00:00Z"), &w, &[]), Ok(WindowState::Open));
        assert_eq!(window_state(at("2026-11-29T01:59:00Z"), &w, &[]), Ok(WindowState::Open));
        assert!(matches!(
            window_state(at("2026-11-29T02:00:00Z"), &w, &[]),
            Ok(WindowState::Closed { .. })
        ));
    }

    #[test]
    fn freezes_win_over_windows_and_delay_the_next_opening() {
        let freeze = vec![Freeze {
            from: "2026-12-24T00:00:00Z".into(),
            to: "2026-12-28T12:00:00Z".into(),
            reason: Some("holidays".into()),
        }];
        assert_eq!(
            window_state(at("2026-12-24T10:00:00Z"), &weekdays_9_to_16(), &freeze),
            Ok(WindowState::Frozen {
                until: at("2026-12-28T12:00:00Z"),
                reason: Some("holidays".into())
            })
        );
        // Just before the freeze on a Wednesday evening: the Thursday window is frozen, so the next opening is
        // when the freeze ends inside Monday's window.
        assert_eq!(
            window_state(at("2026-12-23T17:00:00Z"), &weekdays_9_to_16(), &freeze),
            Ok(WindowState::Closed {
                opens_at: Some(at("2026-12-28T12:00:00Z"))
            })
        );
        assert_eq!(
            window_state(at("2026-12-28T12:00:00Z"), &[], &freeze),
            Ok(WindowState::Open)
        );
    }

    #[test]
    fn bad_windows_and_freezes_are_named() {
        let w = vec![PromotionWindow {
            days: vec!["Someday".into()],
            start: "09:00".into(),
            end: "10:00".into(),
        }];
        let err = validate(&w, &[]).unwrap_err().to_string();
        assert!(err.contains("Someday"), "{err}");
        let f = vec![Freeze {
            from: "2026-12-28T00:00:00Z".into(),
            to: "2026-12-24T00:00:00Z".into(),
            reason: None,
        }];
        assert!(validate(&[], &f).unwrap_err().to_string().contains("after"));
        assert!(validate(&weekdays_9_to_16(), &[]).is_ok());
    }

    #[test]
    fn soak_counts_from_verification() {
        let verified = at("2026-11-25T10:00:00Z");
        let hour = Duration::from_secs(3600);
        assert_eq!(
            soak_remaining(verified, hour, at("2026-11-25T10:45:00Z")),
            Some(Duration::from_secs(900))
        );
        assert_eq!(soak_remaining(verified, hour, at("2026-11-25T11:00:00Z")), None);
    }
}
