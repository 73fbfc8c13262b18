//! In-process wake-ups between request handlers, the maintenance loop and the supervisor.
//!
//! The queue itself is durable in the store; these only shorten waits: a long-polling
//! `job-take` sleeps on its endpoint's [`Notify`] instead of polling the database, `/runsync`
//! waits on its job's notifier (and a slow poll for transitions that bypass it), and the stop
//! channel waits on `stop`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, watch};

/// See the module docs.
pub struct Signals {
    available: Mutex<HashMap<String, Arc<Notify>>>,
    finished: watch::Sender<u64>,
    jobs: Mutex<HashMap<String, Arc<Notify>>>,
    stops: Mutex<HashMap<String, Vec<String>>>,
    stop: Notify,
    shutdown: watch::Sender<bool>,
}

impl Default for Signals {
    fn default() -> Self {
        Self {
            available: Mutex::default(),
            finished: watch::channel(0).0,
            jobs: Mutex::default(),
            stops: Mutex::default(),
            stop: Notify::new(),
            shutdown: watch::channel(false).0,
        }
    }
}

impl Signals {
    /// The notifier woken when jobs become available on an endpoint.
    pub fn endpoint(&self, endpoint_id: &str) -> Arc<Notify> {
        let mut map = self.available.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(endpoint_id.to_string()).or_default().clone()
    }

    /// Wakes the takers of an endpoint (new or requeued jobs, draining workers).
    pub fn jobs_available(&self, endpoint_id: &str) {
        self.endpoint(endpoint_id).notify_waiters();
    }

    /// Wakes one taker of an endpoint: one job was added. Waking them all would make every
    /// long-polling worker race for the one job (a claim each, one wins); a woken taker that
    /// claims nothing it could have (draining, shutting down) passes the wake-up on
    /// ([`Signals::pass_on`]), and tokio hands a wake-up whose waiter went away to the next.
    pub fn job_added(&self, endpoint_id: &str) {
        self.endpoint(endpoint_id).notify_one();
    }

    /// Passes a wake-up from [`Signals::job_added`] that its taker did not use to another
    /// taker of the endpoint.
    pub fn pass_on(notify: &Notify) {
        notify.notify_one();
    }

    /// Wakes the takers of every endpoint.
    pub fn wake_all(&self) {
        let map = self.available.lock().unwrap_or_else(|e| e.into_inner());
        for n in map.values() {
            n.notify_waiters();
        }
    }

    /// Subscribes to job completions (the counter changes on each).
    pub fn finished(&self) -> watch::Receiver<u64> {
        self.finished.subscribe()
    }

    /// Announces that some job reached a final state.
    pub fn job_finished(&self) {
        self.finished.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The notifier woken when this job reaches a final state (for `/runsync`); pair with
    /// [`Signals::forget_job`] when done waiting.
    pub fn job_waiter(&self, job_id: &str) -> Arc<Notify> {
        let mut map = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(job_id.to_string()).or_default().clone()
    }

    /// Wakes the waiters of one job.
    pub fn notify_job(&self, job_id: &str) {
        let map = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get(job_id) {
            n.notify_waiters();
        }
    }

    /// Drops the notifier of a job nobody waits for any more.
    pub fn forget_job(&self, job_id: &str) {
        let mut map = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(job_id);
    }

    /// Asks `worker_id` to stop running `job_id` (served on its stop channel).
    pub fn request_stop(&self, worker_id: &str, job_id: &str) {
        let mut map = self.stops.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(worker_id.to_string())
            .or_default()
            .push(job_id.to_string());
        drop(map);
        self.stop.notify_waiters();
    }

    /// Takes the pending stop requests of a worker.
    pub fn take_stops(&self, worker_id: &str) -> Vec<String> {
        let mut map = self.stops.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(worker_id).unwrap_or_default()
    }

    /// The notifier of the stop channel.
    pub fn stop_notify(&self) -> &Notify {
        &self.stop
    }

    /// Tells long polls to answer now: the server is shutting down.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
        self.wake_all();
        self.stop.notify_waiters();
    }

    /// A receiver that sees `true` once shutdown began.
    pub fn shutdown(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}
