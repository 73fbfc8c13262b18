//! Periodic upkeep of the job queue, every `maintenance_interval`: jobs whose lease
//! expired (their worker missed its heartbeats) back to the queue, jobs past their
//! execution timeout `TIMED_OUT`, finished jobs past the retention window deleted.

use super::job_finished;
use crate::state::AppState;
use crate::util::now_ms;

/// Periodic queue upkeep: expired leases back to the queue, execution timeouts.
pub async fn maintenance(state: AppState) {
    let mut shutdown = state.signals.shutdown();
    let mut tick = tokio::time::interval(state.config.maintenance_interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let now = now_ms();
        match state.store.requeue_expired(now, state.config.max_retries) {
            Ok(r) => {
                // A worker that missed its heartbeats may only be slow: should it come back,
                // its stop poll tells it to drop the job now running elsewhere.
                for (worker, job) in &r.lost {
                    state.signals.request_stop(worker, job);
                }
                if !r.requeued.is_empty() {
                    tracing::warn!(jobs = ?r.requeued, "leases expired (missed heartbeats): jobs requeued");
                    state.signals.wake_all();
                    state.supervisor.kick();
                }
                for job in &r.failed {
                    tracing::warn!(job = %job.id, "job out of retries: FAILED");
                    job_finished(&state, job);
                }
            }
            Err(e) => tracing::error!(error = %e, "requeueing expired leases"),
        }
        // Finished jobs are kept for the retention window, then deleted with their stream
        // chunks, a bounded batch per tick.
        let cutoff =
            now - i64::try_from(state.config.job_retention.as_millis()).unwrap_or(i64::MAX);
        match state.store.delete_finished_before(cutoff, 10_000) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(jobs = n, "finished jobs past the retention window deleted"),
            Err(e) => tracing::error!(error = %e, "deleting finished jobs"),
        }
        match state.store.time_out_jobs(now) {
            Ok(jobs) => {
                for job in &jobs {
                    tracing::warn!(job = %job.id, "execution timeout: TIMED_OUT");
                    if let Some(worker) = &job.worker_id {
                        state.signals.request_stop(worker, &job.id);
                        state.supervisor.job_done(&job.endpoint_id, worker);
                    }
                    job_finished(&state, job);
                }
            }
            Err(e) => tracing::error!(error = %e, "timing out jobs"),
        }
    }
}
