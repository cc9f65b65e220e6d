//! The models this server separates with: `GET /apiv1/models`, and the one rule every route uses
//! to decide whether a model is served.
//!
//! Workers announce the models they hold (`stemsep_common::registry`); the server offers those,
//! narrowed to `STEMSEP_MODELS` when that is set. Until any worker has announced a model (a
//! worker not yet started), it accepts the names of `STEMSEP_MODELS`, or `htdemucs` alone, so
//! that the lab's clients are not refused for the order in which processes start.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use stemsep_common::job::{Track, DEFAULT_MODEL};
use stemsep_common::registry::{self, ModelCard};
use stemsep_manifest::Weights;

use crate::error::ApiError;
use crate::state::AppState;

/// One served model.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelEntry {
    /// The name to send as `model`.
    pub name: String,
    /// The stems a job with this model gives (`GET /apiv1/track/<hash>/<stem>`), the lab's four
    /// first; empty while no worker has described the model.
    pub stems: Vec<String>,
    /// The segment its members run on, in seconds.
    pub segment_seconds: Option<f64>,
    /// Members in its bag (several for `htdemucs_ft`).
    pub members: Option<usize>,
    /// `pretrained` (separates real music), `demo` (trained here on synthetic renders) or
    /// `random` (a test model: its stems are noise).
    #[schema(value_type = Option<String>)]
    pub weights: Option<Weights>,
}

/// The served models.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelsResponse {
    /// The model a request without `model` gets.
    pub default: String,
    /// Every model a request may name.
    pub models: Vec<ModelEntry>,
}

impl ModelEntry {
    fn of_card(card: &ModelCard) -> ModelEntry {
        let stems = Track::of_sources(&card.stems)
            .map(|t| t.into_iter().map(String::from).collect())
            .unwrap_or_else(|_| card.stems.clone());
        ModelEntry {
            name: card.name.clone(),
            stems,
            segment_seconds: Some(card.segment_seconds),
            members: Some(card.members),
            weights: Some(card.weights),
        }
    }

    fn named(name: &str) -> ModelEntry {
        ModelEntry {
            name: name.to_owned(),
            stems: Vec::new(),
            segment_seconds: None,
            members: None,
            weights: None,
        }
    }
}

/// The models a request may name, with what is known of each.
pub(crate) async fn served(state: &AppState) -> Result<Vec<ModelEntry>, ApiError> {
    let cards = registry::announced(&state.queue)
        .await
        .map_err(ApiError::queue)?;
    let allowed = |name: &str| state.models.is_empty() || state.models.iter().any(|m| m == name);
    let mut served: Vec<ModelEntry> = cards
        .iter()
        .filter(|c| allowed(&c.name))
        .map(ModelEntry::of_card)
        .collect();
    if cards.is_empty() {
        served = if state.models.is_empty() {
            vec![ModelEntry::named(DEFAULT_MODEL)]
        } else {
            state.models.iter().map(|m| ModelEntry::named(m)).collect()
        };
    }
    Ok(served)
}

/// The models this server separates with: stems, segment, and what kind of weights each has.
#[utoipa::path(
    get,
    path = "/apiv1/models",
    responses(
        (status = 200, description = "The served models", body = ModelsResponse),
        (status = 503, description = "Redis unavailable", body = crate::error::ErrorBody),
    )
)]
pub async fn models(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(ModelsResponse {
        default: DEFAULT_MODEL.to_owned(),
        models: served(&state).await?,
    }))
}
