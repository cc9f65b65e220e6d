//! The stemsep HTTP API, byte-compatible with the course lab's clients.
//!
//! [`startup::Application`] binds the listener and registers every route; handlers live in
//! [`routes`], one resource each, behind [`guard`] (API keys, rate limits); [`error::ApiError`]
//! chooses every error status in one place.
//! The binary (`stemsep-rest`) only parses [`config::Settings`], installs logging and runs it.
#![warn(missing_docs)]

pub mod auth;
pub mod config;
pub mod error;
pub mod guard;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod startup;
pub mod state;
pub mod submission;
