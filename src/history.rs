//! What the dashboard shows of the past: the last ten minutes, one sample a second (requests, errors
//! and the 99th percentile of response times in that second), and the last health transitions with
//! their time and reason. Pure: the engines pass in the running totals and the time.

use crate::histogram::Counts;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;

/// Seconds of history kept.
pub const SECONDS: usize = 600;
/// Health transitions kept.
pub const EVENTS: usize = 100;

/// Running totals, as they stand at a sampling instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub requests: u64,
    pub errors: u64,
    /// Every backend's response times together.
    pub latency: Counts,
}

/// One second of the past.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Unix time, seconds.
    pub t: u64,
    pub requests: u64,
    pub errors: u64,
    /// The 99th percentile of the responses of that second, in milliseconds; `None` without any.
    pub p99_ms: Option<f64>,
}

/// The last [`SECONDS`] samples.
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
    last: Option<Totals>,
}

impl History {
    /// Takes the totals at `t`: the difference from the previous ones (zero before the first) is
    /// that second's sample.
    pub fn record(&mut self, t: u64, totals: Totals) {
        let last = self.last.unwrap_or_default();
        let mut delta = Counts {
            sum_us: totals.latency.sum_us.saturating_sub(last.latency.sum_us),
            ..Counts::default()
        };
        for (d, (now, then)) in delta
            .buckets
            .iter_mut()
            .zip(totals.latency.buckets.iter().zip(&last.latency.buckets))
        {
            *d = now.saturating_sub(*then);
        }
        if self.samples.len() == SECONDS {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            t,
            requests: totals.requests.saturating_sub(last.requests),
            errors: totals.errors.saturating_sub(last.errors),
            p99_ms: delta.quantile_ms(0.99),
        });
        self.last = Some(totals);
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples.iter().copied().collect()
    }
}

/// A backend going down or coming back up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthEvent {
    /// Unix time, seconds.
    pub t: u64,
    pub pool: String,
    pub backend: String,
    /// `"up"` or `"down"`.
    pub state: &'static str,
    pub reason: String,
}

/// The last [`EVENTS`] health transitions of a balancer's backends. Transitions are rare, so a lock
/// is fine here: nothing on the request path takes it unless a backend changes state.
#[derive(Debug, Default)]
pub struct EventLog {
    events: Mutex<VecDeque<HealthEvent>>,
}

impl EventLog {
    pub fn push(&self, event: HealthEvent) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if events.len() == EVENTS {
            events.pop_front();
        }
        events.push_back(event);
    }

    /// Oldest first.
    pub fn events(&self) -> Vec<HealthEvent> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events.iter().cloned().collect()
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::Histogram;
    use std::time::Duration;

    #[test]
    fn each_second_is_the_difference_of_the_totals() {
        let h = Histogram::default();
        let mut history = History::default();
        // (t, requests so far, errors so far, response times recorded this second in ms)
        let steps: &[(u64, u64, u64, &[u64])] = &[
            (100, 10, 0, &[3, 3]),
            (101, 25, 1, &[3; 15]),
            (102, 25, 1, &[]),
            (103, 125, 3, &[40; 100]),
        ];
        for &(t, requests, errors, times) in steps {
            for &ms in times {
                h.record(Duration::from_millis(ms));
            }
            history.record(
                t,
                Totals {
                    requests,
                    errors,
                    latency: h.counts(),
                },
            );
        }
        let got: Vec<(u64, u64, u64, Option<f64>)> = history
            .samples()
            .iter()
            .map(|s| (s.t, s.requests, s.errors, s.p99_ms.map(f64::round)))
            .collect();
        assert_eq!(
            got,
            [
                (100, 10, 0, Some(5.0)),
                (101, 15, 1, Some(5.0)),
                (102, 0, 0, None),
                (103, 100, 2, Some(50.0))
            ]
        );
    }

    #[test]
    fn ten_minutes_are_kept_and_no_more() {
        let mut history = History::default();
        for t in 0..(SECONDS as u64 + 50) {
            history.record(
                t,
                Totals {
                    requests: t * 2,
                    ..Totals::default()
                },
            );
        }
        let samples = history.samples();
        assert_eq!(samples.len(), SECONDS);
        assert_eq!(samples.first().map(|s| s.t), Some(50));
        assert!(samples.iter().all(|s| s.requests == 2));
        assert_eq!(history.samples().len(), SECONDS);
    }

    #[test]
    fn the_event_log_keeps_the_last_transitions() {
        let log = EventLog::default();
        for i in 0..(EVENTS + 5) {
            log.push(HealthEvent {
                t: i as u64,
                pool: "default".into(),
                backend: format!("http://b{i}"),
                state: if i % 2 == 0 { "down" } else { "up" },
                reason: "probe".into(),
            });
        }
        let events = log.events();
        assert_eq!(events.len(), EVENTS);
        assert_eq!(events[0].t, 5);
        assert_eq!(
            events.last().map(|e| e.backend.as_str()),
            Some("http://b104")
        );
    }
}
