//! `progress_summary` of `GET /api/campaigns/{id}` (issue 10 item 7): the loading half of
//! [`crate::campaigns::progress`], which does the arithmetic.

use serde::Serialize;
use utoipa::ToSchema;

use super::ApiError;
use crate::campaigns::progress::{self, ImageVersion, ProgressInput, ProgressSummary};
use crate::campaigns::{drivers::engine_state, CampaignDto, DriverKind};
use crate::firmware::spelling;
use crate::storage;
use crate::AppState;

/// One campaign with what it is waiting for.
#[derive(Serialize, ToSchema)]
pub struct CampaignDetail {
    #[serde(flatten)]
    pub campaign: CampaignDto,
    pub progress_summary: ProgressSummary,
}

/// The summary of a campaign read just now.
pub async fn summary(app: &AppState, c: &CampaignDto) -> Result<ProgressSummary, ApiError> {
    let row = storage::campaigns::get(&app.db, c.id).await?;
    // Only the engine keeps a state this release can read; a state it cannot read leaves the
    // summary to the devices' stages (the runner reports the unreadable state itself).
    let run = match (c.driver, row.and_then(|r| r.driver_state)) {
        (DriverKind::Engine, Some(state)) => engine_state::load(state).ok(),
        _ => None,
    };
    let facts =
        storage::campaigns::device_facts::of_campaign(&app.db, c.id, c.started_at.as_deref())
            .await?;
    let image = image_version(app, c.firmware_id).await?;
    Ok(progress::summarise(&ProgressInput {
        state: c.state,
        plan: &c.plan,
        run: run.as_ref(),
        devices: &c.devices,
        facts: &facts,
        image: &image,
        started_at: c.started_at.as_deref(),
        completed_at: c.completed_at.as_deref(),
        // A look, not a request: a console or a script refreshing the campaign's page every
        // few tens of milliseconds would otherwise keep a simulated network's clock standing
        // (it stands for a while after every request) and slow the very campaign it watches.
        now: app.network.peek_now(),
        time_scale: app.network.time_scale(),
    }))
}

/// The image's trailer version, the versioning its metadata states, and the fleet's type
/// nearest it for devices that reported none (as `GET /api/campaigns/{id}/versions` does).
async fn image_version(app: &AppState, firmware_id: i64) -> Result<ImageVersion, ApiError> {
    let Some(image) = storage::firmware::get(&app.db, firmware_id).await? else {
        return Ok(ImageVersion::default());
    };
    let Some(raw) = image.trailer.as_ref().map(|t| t.version) else {
        return Ok(ImageVersion::default());
    };
    let near = storage::version_status::versioning_near(&app.db, raw).await?;
    Ok(ImageVersion {
        raw: Some(raw),
        stated: image.metadata.versioning.clone(),
        fallback_type: spelling::near(raw, near),
    })
}
