//! The plan from the real network (issue 10 item 8), for `POST /api/campaigns`, the preview
//! and a draft's edits: gathers what the network says (device-profile uplink interval, loss)
//! and lets [`crate::campaigns::plan_network`] turn it into plan fields; then the redundancy
//! advice at that loss, with a default redundancy raised to the advice.

use crate::campaigns::plan::{self, PlanWarning, RedundancyAdvice};
use crate::campaigns::plan_network::{self, LossFigure};
use crate::campaigns::region::RegionInfo;
use crate::campaigns::validate::{self, CampaignRequest, Context, Validated};
use crate::config::NetworkKind;
use crate::devices::DevEui;
use crate::AppState;

/// Devices whose profile is read: a unicast step waits for the slowest, and a fleet's devices
/// share a few profiles, so a sample tells without a request per device.
const PROFILE_SAMPLE: usize = 10;
/// Devices whose packages the plan's sessions are read from (two requests each on ChirpStack
/// v4, and the preview asks as fields change); the start reads every device.
const SESSION_DEVICES: usize = 500;
/// Devices and uplinks per device the frame-counter loss is measured over.
const LOSS_DEVICES: usize = 200;
const LOSS_UPLINKS: i64 = 50;

/// What the network says about the campaign's devices.
pub struct NetworkFacts {
    /// The longest `uplink_interval` of the sampled devices' profiles.
    pub profile_interval_s: Option<f64>,
    pub loss: LossFigure,
}

/// Reads the facts; a network server that does not answer leaves them to the fallbacks (the
/// preview must not fail because ChirpStack is slow, and the start checks reachability).
pub async fn gather(app: &AppState, devices: &[String]) -> NetworkFacts {
    let mut profile_interval_s: Option<f64> = None;
    for eui in devices.iter().take(PROFILE_SAMPLE) {
        let Ok(eui) = eui.parse::<DevEui>() else {
            continue;
        };
        match app.network.device_profile_packages(eui).await {
            Ok(Some(p)) => {
                if let Some(s) = p.uplink_interval_s {
                    let s = f64::from(s);
                    profile_interval_s = Some(profile_interval_s.map_or(s, |m| m.max(s)));
                }
            }
            // This network keeps no device profiles.
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "device profile unreadable for the plan");
                break;
            }
        }
    }
    let simulated =
        (app.network.kind() == NetworkKind::Simulated).then_some(app.config.network.simulated.loss);
    let mut counters = Vec::new();
    if simulated.is_none() {
        for eui in devices.iter().take(LOSS_DEVICES) {
            match crate::storage::uplinks::recent_f_cnts(&app.db, eui, LOSS_UPLINKS).await {
                Ok(c) => counters.push(c),
                Err(e) => tracing::warn!(error = %e, "uplink counters unreadable for the plan"),
            }
        }
    }
    NetworkFacts {
        profile_interval_s,
        loss: plan_network::loss_figure(simulated, &counters),
    }
}

/// The validated campaign with the network's figures in its plan and the redundancy advice at
/// the network's loss. A request that leaves the redundancy to lorafleet gets the advised
/// redundancy (so a default campaign does not warn about its own default); one that sets it
/// is warned when it is below the advice.
pub async fn plan_with_network(
    req: &CampaignRequest,
    ctx: &Context<'_>,
    region: &RegionInfo,
    v: Validated,
    facts: &NetworkFacts,
) -> Validated {
    let loss = facts.loss.value;
    let m = v.plan.data_fragments as usize;
    let r = v.plan.redundancy_fragments as usize;
    let mut advice = advise(m, r, loss).await;
    let mut v = v;
    let given = req.fragmentation.as_ref().is_some_and(|f| {
        f.redundancy.is_some()
            || f.redundancy_percent.is_some()
            || f.parity.as_deref() == Some("adaptive")
    });
    if let Some(suggested) = advice.as_ref().and_then(|a| a.suggested_redundancy) {
        if !given && suggested as usize > r {
            let mut raised = req.clone();
            raised
                .fragmentation
                .get_or_insert_with(Default::default)
                .redundancy = Some(i64::from(suggested));
            // A raise the request could not carry (the 14-bit counter, the session) keeps
            // the default: the warning below then says what the advice is.
            if let Ok(w) = validate::validate(&raised, ctx) {
                let planned = w.plan.redundancy_fragments as usize;
                advice = match advice {
                    Some(a) => tokio::task::spawn_blocking(move || at_planned(a, m, planned))
                        .await
                        .ok(),
                    None => None,
                };
                v = w;
            }
        }
    }
    let (interval, source) = plan_network::uplink_interval(
        facts.profile_interval_s,
        ctx.observed_uplink_interval_s,
        f64::from(v.settings.unicast.timeout_s),
    );
    plan_network::apply_uplink_interval(&mut v.plan, interval, source);
    v.plan.loss = Some(facts.loss);
    v.plan.sub_bands = plan_network::sub_bands(region, &v.plan, &v.settings, v.devices.len());
    let planned = v.plan.redundancy_fragments as usize;
    if let Some(a) = &advice {
        if let Some(s) = a.suggested_redundancy.filter(|s| *s as usize > planned) {
            v.plan.warnings.push(PlanWarning {
                dev_eui: None,
                message: format!(
                    "{planned} parity fragments complete about {:.0} % of devices at {:.1} % loss ({}); {s} would complete {:.0} %",
                    a.completion_at_planned * 100.0,
                    a.loss * 100.0,
                    loss_words(&facts.loss),
                    a.target * 100.0
                ),
            });
        }
    }
    v.plan.redundancy_advice = advice;
    v
}

async fn advise(m: usize, planned: usize, loss: f64) -> Option<RedundancyAdvice> {
    tokio::task::spawn_blocking(move || plan::redundancy_advice(m, planned, loss))
        .await
        .unwrap_or(None)
}

/// The advice with its completion at a new planned redundancy (the raised default), which the
/// curve may not hold yet; the suggestion itself does not change.
fn at_planned(mut a: RedundancyAdvice, m: usize, planned: usize) -> RedundancyAdvice {
    if let Some((_, c)) = a.curve.iter().find(|(r, _)| *r as usize == planned) {
        a.completion_at_planned = *c;
        return a;
    }
    if a.simulated {
        let point = lorafleet_codec::redundancy::completion_curve(
            m,
            a.loss,
            &[planned],
            a.trials as usize,
            plan::ADVICE_SEED,
        );
        if let Some((_, c)) = point.first() {
            a.completion_at_planned = *c;
            a.curve.push((planned as u32, *c));
            a.curve.sort_by_key(|(r, _)| *r);
        }
    } else if a.suggested_redundancy.is_some_and(|s| planned as u32 >= s) {
        a.completion_at_planned = a.target;
    }
    a
}

fn loss_words(l: &LossFigure) -> String {
    match l.source {
        plan_network::LossSource::Simulated => "the simulated network's configured loss".into(),
        plan_network::LossSource::FcntGaps => {
            format!(
                "uplink loss from frame-counter gaps over {} frames",
                l.frames
            )
        }
        plan_network::LossSource::Default => "no loss measured: the default".into(),
    }
}

/// The multicast sessions an engine campaign's devices need (issue 8 item 6), into the plan:
/// each device's packages as its wave's start will resolve them (its profile under the
/// campaign's and its own `packages`), for up to [`SESSION_DEVICES`] devices.
pub async fn add_sessions(app: &AppState, v: &mut Validated) {
    if v.driver != crate::campaigns::DriverKind::Engine {
        return;
    }
    let status_port = app.config.status_protocol.f_port;
    let mut spoken = Vec::new();
    for eui in v.devices.iter().take(SESSION_DEVICES) {
        let Ok(dev_eui) = eui.parse::<DevEui>() else {
            continue;
        };
        let own = v
            .settings
            .device_overrides
            .get(eui)
            .map(|o| o.packages)
            .unwrap_or_default();
        let (p, _) = crate::engine::packages::speaks(
            app.network.as_ref(),
            dev_eui,
            &own,
            &v.settings.packages,
            status_port,
        )
        .await;
        spoken.push(lorafleet_engine::sessions::Session::of(&p));
    }
    let (sessions, group) = lorafleet_engine::sessions::groups(&spoken);
    plan::add_sessions(
        &mut v.plan,
        &sessions,
        &group,
        v.devices.len() <= SESSION_DEVICES,
    );
}
