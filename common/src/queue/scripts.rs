//! The queue's Lua scripts: each state change of a job is one script, so Redis applies it whole.
//!
//! Time inside a script is Redis's own (`TIME`), so every worker and API process judges leases,
//! back-offs and expiry by one clock. A claim's fencing token lives in the job record's `owner`
//! field and in its lease; every script a worker runs on a claimed job first checks `owner`, so a
//! worker that lost its job (reaped, or the record replaced by a resubmission) changes nothing.

use std::sync::LazyLock;

use redis::Script;

/// Sets `now_ms` and `now_s` from the server's clock.
macro_rules! now {
    () => {
        "local t = redis.call('TIME')
         local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
         local now_s = tonumber(t[1])
        "
    };
}

/// Fails the job in KEYS[1] for good: state failed with the reason ARGV[4], onto the dead-letter
/// list KEYS[4] under ARGV[1], and into the expiry set KEYS[7] when ARGV[7] (ms) is positive.
macro_rules! dead_letter {
    () => {
        "redis.call('HSET', KEYS[1], 'state', 'failed', 'error', ARGV[4], 'updated_at', now_s)
         redis.call('LPUSH', KEYS[4], ARGV[1])
         if tonumber(ARGV[7]) > 0 then redis.call('ZADD', KEYS[7], now_ms + tonumber(ARGV[7]), ARGV[1]) end
         return 'dead'
        "
    };
}

/// KEYS: job, toWorker, delayed, deadLetter. ARGV: replace (0/1), hash, max queued (0 = no
/// limit), then the record's field/value pairs. Answers the state that blocked it, `full`, or
/// `new`.
pub(super) static ENQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local state = redis.call('HGET', KEYS[1], 'state')
          if state == 'queued' or state == 'running' then return state end
          if (state == 'done' or state == 'failed') and ARGV[1] == '0' then return state end
          local max = tonumber(ARGV[3])
          if max > 0 and redis.call('LLEN', KEYS[2]) + redis.call('ZCARD', KEYS[3]) >= max then
            return 'full'
          end
          redis.call('DEL', KEYS[1])
          redis.call('HSET', KEYS[1], unpack(ARGV, 4))
          redis.call('LREM', KEYS[4], 0, ARGV[2])
          redis.call('LPUSH', KEYS[2], ARGV[2])
          return 'new'",
    )
});

/// KEYS: job, lease, processing, fence, orphans, delayed. ARGV: worker id, lease ms, hash.
/// After `BLMOVE` put the hash in `processing`: a queued job gets a new fencing token (in its
/// record and its lease) and one more attempt; answers `{token, attempts}`. Anything else (no
/// record, a finished or running job) is a stale entry, dropped: `{-1, 0}`.
pub(super) static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        now!(),
        r"if redis.call('HGET', KEYS[1], 'state') ~= 'queued' then
            redis.call('LREM', KEYS[3], 1, ARGV[3])
            return {-1, 0}
          end
          local token = redis.call('INCR', KEYS[4])
          redis.call('SET', KEYS[2], token, 'PX', ARGV[2])
          redis.call('HSET', KEYS[1], 'state', 'running', 'progress', '0', 'updated_at', now_s,
                     'worker', ARGV[1], 'owner', token)
          redis.call('HDEL', KEYS[5], ARGV[3])
          redis.call('ZREM', KEYS[6], ARGV[3])
          return {token, redis.call('HINCRBY', KEYS[1], 'attempts', 1)}"
    ))
});

/// KEYS: job, lease, orphans. ARGV: token, lease ms, hash. Refreshes the lease while the record
/// still names this token as its owner — also re-taking a lease that lapsed while Redis was out
/// of reach, since no other worker can have taken the job without changing `owner`. 0: lost.
pub(super) static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
          redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
          redis.call('HDEL', KEYS[3], ARGV[3])
          return 1",
    )
});

/// KEYS: job. ARGV: token, percent. 0: not the owner.
pub(super) static PROGRESS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        now!(),
        r"if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
          redis.call('HSET', KEYS[1], 'progress', ARGV[2], 'updated_at', now_s)
          return 1"
    ))
});

/// KEYS: job, processing, lease, orphans, expiry. ARGV: hash, token, retention ms (0 = keep),
/// stems (comma-separated). State done with its stems, off `processing`, lease released, expiry
/// scheduled. 0: not the owner (nothing
/// changed); 1: this call finished the job.
pub(super) static COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        now!(),
        r"if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[2] then return 0 end
          redis.call('HSET', KEYS[1], 'state', 'done', 'progress', '100', 'stems', ARGV[4],
                     'updated_at', now_s)
          redis.call('HDEL', KEYS[1], 'error', 'owner')
          redis.call('LREM', KEYS[2], 0, ARGV[1])
          if redis.call('GET', KEYS[3]) == ARGV[2] then redis.call('DEL', KEYS[3]) end
          redis.call('HDEL', KEYS[4], ARGV[1])
          if tonumber(ARGV[3]) > 0 then
            redis.call('ZADD', KEYS[5], now_ms + tonumber(ARGV[3]), ARGV[1])
          end
          return 1"
    ))
});

/// KEYS: job, processing, delayed, deadLetter, lease, orphans, expiry. ARGV: hash, token, max
/// attempts, reason, permanent (0/1), back-off ms, retention ms. A permanent failure or the last
/// attempt is dead-lettered; otherwise the job waits in the delayed set until its back-off ends.
/// Answers `notours`, `retrying` or `dead`.
pub(super) static FAIL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        now!(),
        r"if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[2] then return 'notours' end
          redis.call('LREM', KEYS[2], 0, ARGV[1])
          if redis.call('GET', KEYS[5]) == ARGV[2] then redis.call('DEL', KEYS[5]) end
          redis.call('HDEL', KEYS[6], ARGV[1])
          redis.call('HDEL', KEYS[1], 'owner')
          local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
          if ARGV[5] == '1' or attempts >= tonumber(ARGV[3]) then
          ",
        dead_letter!(),
        r"end
          redis.call('HSET', KEYS[1], 'state', 'queued', 'progress', '0', 'error', ARGV[4],
                     'updated_at', now_s)
          redis.call('ZADD', KEYS[3], now_ms + tonumber(ARGV[6]), ARGV[1])
          return 'retrying'"
    ))
});

/// KEYS: job, processing, toWorker, lease, orphans. ARGV: hash, token. Hands an unfinished job
/// back without counting the attempt. 0: not the owner.
pub(super) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        now!(),
        r"if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[2] then return 0 end
          redis.call('LREM', KEYS[2], 0, ARGV[1])
          if redis.call('GET', KEYS[4]) == ARGV[2] then redis.call('DEL', KEYS[4]) end
          redis.call('HDEL', KEYS[5], ARGV[1])
          redis.call('HDEL', KEYS[1], 'owner')
          redis.call('HSET', KEYS[1], 'state', 'queued', 'progress', '0', 'updated_at', now_s)
          redis.call('HINCRBY', KEYS[1], 'attempts', -1)
          redis.call('RPUSH', KEYS[3], ARGV[1])
          return 1"
    ))
});

/// KEYS: job, processing, toWorker, deadLetter, lease, orphans, expiry. ARGV: hash, lease ms, max
/// attempts, reason, (unused), (unused), retention ms. One hash in `processing`: alive while it
/// has a lease. Without one, the first look records when (in `orphans`); once it has been
/// lease-less for a whole lease time it is taken back: a running job loses its owner and is
/// requeued (or dead-lettered when out of attempts), a job moved but never claimed goes back as
/// it was, anything else is a stale entry and dropped. Answers `alive`, `suspect`, `gone`,
/// `requeued`, `dead` or `dropped`.
pub(super) static REAP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        now!(),
        r"if redis.call('EXISTS', KEYS[5]) == 1 then
            redis.call('HDEL', KEYS[6], ARGV[1])
            return 'alive'
          end
          local since = tonumber(redis.call('HGET', KEYS[6], ARGV[1]) or '-1')
          if since < 0 then
            redis.call('HSET', KEYS[6], ARGV[1], now_ms)
            return 'suspect'
          end
          if now_ms - since < tonumber(ARGV[2]) then return 'suspect' end
          redis.call('HDEL', KEYS[6], ARGV[1])
          if redis.call('LREM', KEYS[2], 1, ARGV[1]) == 0 then return 'gone' end
          local state = redis.call('HGET', KEYS[1], 'state')
          if state == 'queued' then
            redis.call('RPUSH', KEYS[3], ARGV[1])
            return 'requeued'
          end
          if state ~= 'running' then return 'dropped' end
          redis.call('HDEL', KEYS[1], 'owner')
          local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
          if attempts >= tonumber(ARGV[3]) then
          ",
        dead_letter!(),
        r"end
          redis.call('HSET', KEYS[1], 'state', 'queued', 'progress', '0', 'error', ARGV[4],
                     'updated_at', now_s)
          redis.call('RPUSH', KEYS[3], ARGV[1])
          return 'requeued'"
    ))
});

/// KEYS: delayed, toWorker. ARGV: at most this many. Moves jobs whose back-off is over to the
/// consuming end of `toWorker`; answers how many.
pub(super) static PROMOTE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        now!(),
        r"local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, ARGV[1])
          for _, h in ipairs(due) do
            redis.call('ZREM', KEYS[1], h)
            redis.call('RPUSH', KEYS[2], h)
          end
          return #due"
    ))
});

/// KEYS: expiry. ARGV: at most this many. The hashes whose retention is over, with their scores:
/// `[hash, score, hash, score, ...]`.
pub(super) static DUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        now!(),
        r"return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'WITHSCORES', 'LIMIT', 0, ARGV[1])"
    ))
});

/// KEYS: expiry, job, deadLetter, files. ARGV: hash, the score [`DUE`] returned. Deletes a
/// finished job's record, dead letter and list of made files once its objects are gone.
/// `moved`: it finished again since (a later expiry stands); `kept`: it was resubmitted and is
/// not finished; `expired`.
pub(super) static EXPIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('ZSCORE', KEYS[1], ARGV[1]) ~= ARGV[2] then return 'moved' end
          redis.call('ZREM', KEYS[1], ARGV[1])
          local state = redis.call('HGET', KEYS[2], 'state')
          if state == 'done' or state == 'failed' then
            redis.call('DEL', KEYS[2], KEYS[4])
            redis.call('LREM', KEYS[3], 0, ARGV[1])
            return 'expired'
          end
          return 'kept'",
    )
});

/// KEYS: job. ARGV: upload id ('' for none), field, text. Writes a note (the callback's outcome)
/// only into the submission it is about, never into a resubmission's new record. 0: not written.
pub(super) static NOTE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
          if (redis.call('HGET', KEYS[1], 'upload') or '') ~= ARGV[1] then return 0 end
          redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
          return 1",
    )
});
