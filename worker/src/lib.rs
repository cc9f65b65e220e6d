//! The stemsep queue worker: claims jobs from Redis, separates their songs with the engine
//! ([`stemsep_engine`]), stores the stems and calls the client back (see [`runner`]).
#![warn(missing_docs)]

pub mod callback;
pub mod config;
pub mod error;
pub mod metrics;
pub mod models;
pub mod runner;
