//! The scaling policy: how many workers an endpoint should have, and which to let go.
//!
//! Pure functions of what the supervisor observed (queue depth, requests in flight, the
//! pool's workers, the clock), so every rule is unit-tested without processes or sleeps; the
//! supervisor measures, calls these, and acts on the answer.
//!
//! - [`target`]: the desired worker count, between `workersMin` and `workersMax`.
//!   `QUEUE_DELAY` adds one worker at a time while the oldest queued job has waited
//!   `scalerValue` seconds (one at once when none runs, none while one is still booting);
//!   `REQUEST_COUNT` keeps `ceil(outstanding / scalerValue)`; load-balanced endpoints count
//!   requests in flight plus those waiting for a worker. An endpoint without a build to boot
//!   gets none.
//! - [`starts`]: how many to start towards the target now (one at a time after crashes, none
//!   before the crash backoff ([`backoff`]) elapsed).
//! - [`idle_to_drain`]: above the target, the workers idle for at least `idleTimeout`,
//!   longest idle first, at most as many as the excess.

use std::time::{Duration, Instant};

use flash_manifest::describe::ScalerType;

/// An endpoint's scaling settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub scaler: ScalerType,
    /// `scalerValue`: seconds of queue delay, or requests per worker (0 counts as 1).
    pub scaler_value: u32,
    pub workers_min: u32,
    pub workers_max: u32,
    /// False for an endpoint of a Flash environment that has no active build yet: its
    /// workers would have no artifact to boot, so it gets none whatever `workersMin` says.
    pub bootable: bool,
}

/// The work waiting for an endpoint's workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Demand {
    /// A queue-based endpoint's jobs.
    Queue {
        queued: u64,
        running: u64,
        /// How long the oldest queued job has waited (zero when none is queued).
        oldest_wait: Duration,
    },
    /// A load-balanced endpoint's requests: being served, and waiting for a ready worker.
    Requests { in_flight: u64, waiting: u64 },
}

/// The pool's workers that are not draining.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Active {
    pub workers: usize,
    /// Of those, started but not ready yet.
    pub initializing: usize,
}

/// The number of workers the endpoint should run. See the module docs.
pub fn target(policy: &Policy, demand: &Demand, active: Active) -> usize {
    if !policy.bootable {
        return 0;
    }
    let per = u64::from(policy.scaler_value.max(1));
    let want = match *demand {
        // Load-balanced endpoints have no queue to measure a delay on.
        Demand::Requests { in_flight, waiting } => (in_flight + waiting).div_ceil(per),
        Demand::Queue {
            queued,
            running,
            oldest_wait,
        } => match policy.scaler {
            ScalerType::RequestCount => (queued + running).div_ceil(per),
            ScalerType::QueueDelay => {
                let n = active.workers as u64;
                if queued == 0 {
                    0
                } else if n == 0 {
                    1
                } else if active.initializing == 0 && oldest_wait >= Duration::from_secs(per) {
                    (n + 1).min(queued + running)
                } else {
                    n
                }
            }
        },
    };
    let min = u64::from(policy.workers_min);
    let max = u64::from(policy.workers_max.max(policy.workers_min));
    usize::try_from(want.clamp(min, max)).unwrap_or(usize::MAX)
}

/// Delay before the next start after `crashes` consecutive crashes: 0.5 s, doubling, at most
/// `max`.
pub fn backoff(crashes: u32, max: Duration) -> Duration {
    let ms = 500u64.saturating_mul(1u64 << crashes.saturating_sub(1).min(16));
    Duration::from_millis(ms).min(max)
}

/// Crash history of a pool, for [`starts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Crashes {
    /// Consecutive unexpected exits (or failed starts).
    pub count: u32,
    /// No start before this instant.
    pub next_start: Option<Instant>,
}

/// How many workers to start now to move from `active` towards `target`.
pub fn starts(target: usize, active: usize, crashes: Crashes, now: Instant) -> usize {
    if active >= target || crashes.next_start.is_some_and(|t| now < t) {
        0
    } else if crashes.count > 0 {
        // After crashes, start one at a time.
        1
    } else {
        target - active
    }
}

/// What [`idle_to_drain`] knows of a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerState<'a> {
    pub id: &'a str,
    pub ready: bool,
    pub busy: bool,
    pub draining: bool,
    pub idle_since: Instant,
}

/// The workers to drain to shed `excess`: ready, not busy, not draining yet and idle for at
/// least `idle_timeout`, longest idle first.
pub fn idle_to_drain<'a>(
    workers: impl IntoIterator<Item = WorkerState<'a>>,
    excess: usize,
    idle_timeout: Duration,
    now: Instant,
) -> Vec<&'a str> {
    let mut idle: Vec<WorkerState<'a>> = workers
        .into_iter()
        .filter(|w| {
            !w.draining && !w.busy && w.ready && now.duration_since(w.idle_since) >= idle_timeout
        })
        .collect();
    idle.sort_by_key(|w| w.idle_since);
    idle.into_iter().take(excess).map(|w| w.id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(scaler: ScalerType, scaler_value: u32, min: u32, max: u32) -> Policy {
        Policy {
            scaler,
            scaler_value,
            workers_min: min,
            workers_max: max,
            bootable: true,
        }
    }

    fn queue(queued: u64, running: u64, waited_ms: u64) -> Demand {
        Demand::Queue {
            queued,
            running,
            oldest_wait: Duration::from_millis(waited_ms),
        }
    }

    fn active(workers: usize, initializing: usize) -> Active {
        Active {
            workers,
            initializing,
        }
    }

    /// `REQUEST_COUNT` 1 with 0..=3 workers (tests/all/scaling.rs: six jobs, three workers, then
    /// back to zero).
    #[test]
    fn request_count_follows_outstanding_jobs_up_to_workers_max() {
        let p = policy(ScalerType::RequestCount, 1, 0, 3);
        assert_eq!(
            target(&p, &queue(0, 0, 0), active(0, 0)),
            0,
            "no load, no workers"
        );
        assert_eq!(target(&p, &queue(1, 0, 0), active(0, 0)), 1);
        assert_eq!(
            target(&p, &queue(6, 0, 0), active(0, 0)),
            3,
            "capped at workersMax"
        );
        assert_eq!(
            target(&p, &queue(0, 2, 0), active(3, 0)),
            2,
            "running jobs count"
        );
        assert_eq!(
            target(&p, &queue(0, 0, 0), active(3, 0)),
            0,
            "idle: back to zero"
        );
        let p = policy(ScalerType::RequestCount, 4, 0, 10);
        assert_eq!(target(&p, &queue(4, 0, 0), active(0, 0)), 1);
        assert_eq!(target(&p, &queue(4, 1, 0), active(0, 0)), 2, "rounded up");
        let zero = policy(ScalerType::RequestCount, 0, 0, 10);
        assert_eq!(
            target(&zero, &queue(3, 0, 0), active(0, 0)),
            3,
            "0 counts as 1"
        );
    }

    /// `QUEUE_DELAY` 1 with 1..=2 workers (tests/all/scaling.rs: a second worker once jobs wait
    /// over a second, then back to workersMin and not below).
    #[test]
    fn queue_delay_adds_one_worker_per_delay_and_respects_workers_min() {
        let p = policy(ScalerType::QueueDelay, 1, 1, 2);
        assert_eq!(
            target(&p, &queue(0, 0, 0), active(0, 0)),
            1,
            "workersMin floor"
        );
        assert_eq!(
            target(&p, &queue(0, 0, 0), active(2, 0)),
            1,
            "idle: down to min"
        );
        assert_eq!(
            target(&p, &queue(3, 1, 500), active(1, 0)),
            1,
            "not waited long enough"
        );
        assert_eq!(
            target(&p, &queue(3, 1, 1000), active(1, 0)),
            2,
            "waited scalerValue s"
        );
        assert_eq!(
            target(&p, &queue(3, 1, 5000), active(2, 0)),
            2,
            "capped at workersMax"
        );
        let p = policy(ScalerType::QueueDelay, 1, 0, 5);
        assert_eq!(
            target(&p, &queue(1, 0, 0), active(0, 0)),
            1,
            "none runs: one at once"
        );
        assert_eq!(
            target(&p, &queue(0, 3, 0), active(3, 0)),
            0,
            "nothing queued"
        );
        assert_eq!(
            target(&p, &queue(3, 1, 9000), active(2, 1)),
            2,
            "one still booting: wait for it"
        );
        assert_eq!(
            target(&p, &queue(1, 0, 9000), active(2, 0)),
            1,
            "never more than the outstanding jobs"
        );
        assert_eq!(
            target(&p, &queue(5, 2, 9000), active(2, 0)),
            3,
            "one at a time"
        );
    }

    #[test]
    fn load_balanced_endpoints_count_requests_whatever_the_scaler() {
        for scaler in [ScalerType::RequestCount, ScalerType::QueueDelay] {
            let p = policy(scaler, 2, 0, 4);
            let requests = |in_flight, waiting| Demand::Requests { in_flight, waiting };
            assert_eq!(target(&p, &requests(0, 0), active(1, 0)), 0);
            assert_eq!(
                target(&p, &requests(0, 1), active(0, 0)),
                1,
                "a waiting request"
            );
            assert_eq!(target(&p, &requests(3, 2), active(2, 0)), 3);
            assert_eq!(target(&p, &requests(50, 0), active(2, 0)), 4);
        }
    }

    #[test]
    fn nothing_to_boot_means_no_workers() {
        let p = Policy {
            bootable: false,
            ..policy(ScalerType::RequestCount, 1, 2, 3)
        };
        assert_eq!(target(&p, &queue(9, 0, 9000), active(0, 0)), 0);
    }

    #[test]
    fn crashes_back_off_and_restart_one_at_a_time() {
        let max = Duration::from_secs(2);
        let delays: Vec<u64> = (1..=5)
            .map(|n| backoff(n, max).as_millis() as u64)
            .collect();
        assert_eq!(delays, [500, 1000, 2000, 2000, 2000]);
        assert_eq!(
            backoff(40, Duration::from_secs(30)),
            Duration::from_secs(30)
        );
        // In 4 s a crashing worker is started 4 times (at 0, 0.5, 1.5 and 3.5 s), not
        // hundreds (tests/all/scaling.rs used to check this with a real sleep).
        let mut at = Duration::ZERO;
        let mut starts_in_4s = 0;
        let mut n = 0;
        while at <= Duration::from_secs(4) {
            starts_in_4s += 1;
            n += 1;
            at += backoff(n, max);
        }
        assert_eq!(starts_in_4s, 4);

        let now = Instant::now();
        let fresh = Crashes::default();
        assert_eq!(starts(3, 0, fresh, now), 3, "no crash: all at once");
        assert_eq!(starts(3, 3, fresh, now), 0);
        assert_eq!(starts(1, 2, fresh, now), 0);
        let crashed = Crashes {
            count: 2,
            next_start: Some(now + Duration::from_secs(1)),
        };
        assert_eq!(starts(3, 0, crashed, now), 0, "backoff not elapsed");
        assert_eq!(
            starts(3, 0, crashed, now + Duration::from_secs(1)),
            1,
            "after crashes: one at a time"
        );
    }

    #[test]
    fn the_longest_idle_workers_go_first_and_only_after_idle_timeout() {
        // In the future, so that going back a minute cannot underflow the monotonic clock.
        let now = Instant::now() + Duration::from_secs(3600);
        let ago = |s: u64| now - Duration::from_secs(s);
        let w = |id, idle_for: u64| WorkerState {
            id,
            ready: true,
            busy: false,
            draining: false,
            idle_since: ago(idle_for),
        };
        let workers = [
            w("a", 3),
            w("b", 10),
            w("c", 1),
            WorkerState {
                busy: true,
                ..w("busy", 60)
            },
            WorkerState {
                ready: false,
                ..w("booting", 60)
            },
            WorkerState {
                draining: true,
                ..w("going", 60)
            },
        ];
        let t = Duration::from_secs(2);
        assert_eq!(idle_to_drain(workers, 5, t, now), ["b", "a"]);
        assert_eq!(
            idle_to_drain(workers, 1, t, now),
            ["b"],
            "at most the excess"
        );
        assert!(idle_to_drain(workers, 0, t, now).is_empty());
        assert_eq!(
            idle_to_drain(workers, 5, Duration::from_secs(60), now),
            Vec::<&str>::new(),
            "nobody idle long enough"
        );
    }
}
