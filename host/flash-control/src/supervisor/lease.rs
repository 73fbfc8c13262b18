//! Load-balancer leases: one ready worker of a load-balanced endpoint reserved for one
//! proxied request.
//!
//! The gateway asks [`Supervisor::acquire_lb`] for a worker; the least busy ready one is
//! picked (ties in turn, so equal workers share the load), and its in-flight count holds the
//! reservation until the [`LbLease`] is dropped. While no worker is ready the request counts
//! as waiting demand, which the scaling policy turns into a worker start; the caller waits,
//! bounded, for one to become ready.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{Supervisor, Worker};

/// A reservation of one LB worker for one proxied request; dropping it ends the request.
#[derive(Debug)]
pub struct LbLease {
    pub addr: SocketAddr,
    inflight: Arc<AtomicUsize>,
}

impl Drop for LbLease {
    fn drop(&mut self) {
        self.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Which of the candidates (requests in flight on each, in a stable order) gets the next
/// request: the least busy, and among equally busy ones the `turn`-th, so that they take
/// turns.
pub fn pick(in_flight: &[usize], turn: usize) -> Option<usize> {
    let least = *in_flight.iter().min()?;
    let tied: Vec<usize> = (0..in_flight.len())
        .filter(|&i| in_flight[i] == least)
        .collect();
    Some(tied[turn % tied.len()])
}

fn can_serve(w: &Worker) -> bool {
    w.ready && w.healthy && !w.draining && w.listen.is_some()
}

impl Supervisor {
    /// Reserves a ready worker of an LB endpoint, starting one if needed; waits up to `wait`.
    pub async fn acquire_lb(&self, endpoint_id: &str, wait: Duration) -> Option<LbLease> {
        let deadline = Instant::now() + wait;
        let mut registered = false;
        let lease = loop {
            {
                let mut inner = self.lock();
                let pool = inner.pools.entry(endpoint_id.to_string()).or_default();
                let mut ready: Vec<&mut Worker> =
                    pool.workers.values_mut().filter(|w| can_serve(w)).collect();
                ready.sort_by(|a, b| a.id.cmp(&b.id));
                let loads: Vec<usize> = ready
                    .iter()
                    .map(|w| w.inflight.load(Ordering::SeqCst))
                    .collect();
                if let Some(i) = pick(&loads, pool.rr) {
                    let w = &mut ready[i];
                    w.inflight.fetch_add(1, Ordering::SeqCst);
                    w.idle_since = Instant::now();
                    let lease = LbLease {
                        addr: w
                            .listen
                            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
                        inflight: w.inflight.clone(),
                    };
                    pool.rr = pool.rr.wrapping_add(1);
                    if registered {
                        pool.lb_demand = pool.lb_demand.saturating_sub(1);
                    }
                    break Some(lease);
                }
                if !registered {
                    pool.lb_demand += 1;
                    registered = true;
                }
            }
            self.kick();
            if Instant::now() >= deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if lease.is_none() && registered {
            let mut inner = self.lock();
            if let Some(pool) = inner.pools.get_mut(endpoint_id) {
                pool.lb_demand = pool.lb_demand.saturating_sub(1);
            }
        }
        lease
    }
}

#[cfg(test)]
mod tests {
    use super::pick;

    #[test]
    fn the_least_busy_worker_is_picked_and_ties_take_turns() {
        assert_eq!(pick(&[], 0), None, "no ready worker");
        assert_eq!(pick(&[2, 0, 1], 0), Some(1));
        assert_eq!(pick(&[2, 0, 1], 7), Some(1), "a single least busy one");
        let turns: Vec<usize> = (0..4).filter_map(|t| pick(&[1, 3, 1], t)).collect();
        assert_eq!(turns, [0, 2, 0, 2]);
    }
}
