//! The models workers serve, announced in Redis so that the REST server knows them without
//! holding their files: `{prefix}models`, a hash of model name → its [`ModelCard`] (JSON). Each
//! worker writes the cards of the models in its model directory when it starts; a model is
//! served once any worker has announced it.

use redis::AsyncCommands;
pub use stemsep_manifest::ModelCard;

use crate::queue::Queue;
use crate::{Error, Result};

/// Announces `cards` as served (replacing earlier cards of the same names).
pub async fn announce(queue: &Queue, cards: &[ModelCard]) -> Result<()> {
    if cards.is_empty() {
        return Ok(());
    }
    let fields = cards
        .iter()
        .map(|c| {
            serde_json::to_string(c)
                .map(|json| (c.name.clone(), json))
                .map_err(|e| Error::Corrupt(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut c = queue.conn().await?;
    let _: () = c.hset_multiple(queue.keys().models(), &fields).await?;
    Ok(())
}

/// The cards workers have announced, sorted by name; an unreadable card is skipped.
pub async fn announced(queue: &Queue) -> Result<Vec<ModelCard>> {
    let mut c = queue.conn().await?;
    let fields: Vec<(String, String)> = c.hgetall(queue.keys().models()).await?;
    let mut cards: Vec<ModelCard> = fields
        .into_iter()
        .filter_map(|(name, json)| {
            let card = serde_json::from_str::<ModelCard>(&json).ok();
            if card.is_none() {
                tracing::warn!(model = %name, "unreadable model card in Redis; ignored");
            }
            card
        })
        .collect();
    cards.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(cards)
}
