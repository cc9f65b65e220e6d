//! What must hold for any `POST /apiv1/separate` body a client can send: the fuzz target
//! `separate_body` runs it on every input libFuzzer makes, and `tests/api/fuzz_corpus.rs`
//! replays the committed corpus through it on stable in `make test`.

use actix_web::ResponseError;
use stemsep_rest::submission::Submission;

/// The server's default limits (`STEMSEP_MAX_SECONDS`) and a second model, so that the model
/// check has both answers to give.
const MAX_SECONDS: u64 = 1200;
const MODELS: [&str; 2] = ["htdemucs", "htdemucs_6s"];

/// Longest error message: client input is quoted shortened, never echoed whole.
const MAX_MESSAGE: usize = 1000;

/// Checks `body` as the handler does once it has read it: every input ends in an accepted
/// submission or a 4xx with a short message, and nothing panics.
pub fn check(body: &[u8]) {
    let models = MODELS.map(String::from);
    match Submission::parse(body, &models, MAX_SECONDS, 320) {
        Ok(s) => {
            assert!(s.shifts <= stemsep_rest::submission::MAX_SHIFTS, "{s:?}");
            for &kind in &s.output.ready {
                assert!(s.output.format(kind).is_ok(), "{s:?}");
            }
            assert!(models.contains(&s.model), "{s:?}");
            assert!(
                s.info.seconds > 0.0 && s.info.seconds <= MAX_SECONDS as f64,
                "{s:?}"
            );
            assert_eq!(s.hash.as_str().len(), 56);
            if let Some(cb) = &s.callback {
                assert!(
                    cb.url.starts_with("http://") || cb.url.starts_with("https://"),
                    "{cb:?}"
                );
            }
        }
        Err(e) => {
            assert!(e.status_code().is_client_error(), "not a 4xx: {e:?}");
            let message = e.to_string();
            assert!(
                !message.is_empty() && message.len() <= MAX_MESSAGE,
                "{message:?}"
            );
        }
    }
}
