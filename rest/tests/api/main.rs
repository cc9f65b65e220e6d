//! The whole HTTP API over real HTTP, against a real redis-server and a temporary storage
//! directory (one test binary; see `helpers::spawn_app`).

mod edge;
mod files;
mod fuzz_corpus;
mod helpers;
mod jobs;
mod logging;
mod models;
mod page;
mod resilience;
mod stems;
mod system;
