//! What the rest API and the worker must agree on, written once: the job record ([`job`]), the
//! Redis queue protocol ([`queue`]), a job's files ([`output`]), object storage ([`storage`]),
//! when finished jobs are deleted ([`retention`]), configuration ([`config`]) and the log lines
//! both push to Redis ([`logging`]).
#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod job;
pub mod logging;
pub mod output;
pub mod queue;
pub mod registry;
pub mod retention;
pub mod storage;

pub use error::{Error, Result};
