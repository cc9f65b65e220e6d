//! Retention: a finished job is kept for `STEMSEP_RETENTION_SECS`, then its stems, masters and
//! files made from them, its input (if still there), its record and its dead letter are
//! deleted. Every worker sweeps in its reaper pass and every API process on its upkeep timer
//! (workers may be scaled to zero for days); a job's objects go first and its record last, so a
//! sweep cut short leaves the job in the expiry set for the next one, and sweeps running side by
//! side only delete the same things twice.

use std::sync::Arc;

use crate::job::{Job, JobState, SongHash};
use crate::queue::Queue;
use crate::storage::{ObjectKey, Storage};
use crate::Result;

/// Jobs expired per sweep at most; the rest wait for the next pass.
const SWEEP_BATCH: usize = 100;

/// The objects a finished job leaves in storage, besides the files made from its masters.
fn objects(job: &Job) -> Vec<ObjectKey> {
    let mut keys: Vec<ObjectKey> = job
        .tracks()
        .iter()
        .map(|t| ObjectKey::stem(&job.hash, t))
        .collect();
    keys.extend(
        job.sources()
            .iter()
            .map(|s| ObjectKey::master(&job.hash, s)),
    );
    keys.push(ObjectKey::input(job));
    keys
}

/// Deletes the jobs whose retention is over; returns how many were deleted.
pub async fn sweep(queue: &Queue, storage: &Arc<dyn Storage>) -> Result<u64> {
    let mut expired = 0;
    for (hash, ticket) in queue.due_for_expiry(SWEEP_BATCH).await? {
        if !delete_objects(queue, storage, &hash).await? {
            continue;
        }
        if queue.expire(&hash, &ticket).await? {
            expired += 1;
            tracing::info!(%hash, "retention over: job deleted");
        }
    }
    Ok(expired)
}

/// Deletes a finished job's objects; `false` if storage failed (try again next sweep). A job
/// resubmitted since is not finished: its objects stay, and `expire` leaves its record alone.
async fn delete_objects(
    queue: &Queue,
    storage: &Arc<dyn Storage>,
    hash: &SongHash,
) -> Result<bool> {
    let Some(job) = queue.job(hash).await? else {
        return Ok(true);
    };
    if !matches!(job.state, JobState::Done | JobState::Failed) {
        return Ok(true);
    }
    let made = queue.files(hash).await?;
    let made = made.iter().map(|r| ObjectKey::rendition(hash, r));
    for key in made.chain(objects(&job)) {
        if let Err(e) = storage.delete(&key).await {
            tracing::warn!(%hash, object = %key, error = %e, "expired object not deleted yet");
            return Ok(false);
        }
    }
    Ok(true)
}
