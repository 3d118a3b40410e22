//! `"driver": "engine"`: campaigns carried by lorafleet's own FUOTA engine over the network
//! trait (ChirpStack v4 or the simulated network). The campaign runner calls [`EngineDriver`]
//! like any other driver; the engine's whole state lives in the campaign's `driver_state`
//! ([`Run`]) and each device's `driver_json` ([`Dev`]), so a restart resumes every device
//! where it was.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};

use super::{
    Campaign, CampaignDriver, DeviceReport, DriverContext, DriverError, Finished, LogLevel,
    LogLine, PollOutcome,
};
use crate::campaigns::validate::FieldError;
use crate::campaigns::{self, DriverKind, FragStatusRequest, Stage};
use crate::config::NetworkKind;
use crate::devices::DevEui;
use crate::engine::packages::{CampaignLayers, DeviceLayers, RunningPackages};
use crate::engine::step::{self, DeviceStart, GroupInfo, LogLine as EngineLog, Stepped};
use crate::engine::Io;
use crate::network::MulticastClass;
use crate::storage::campaigns::HistoryNote;
use lorafleet_engine::adaptive::AdaptiveParity;
use lorafleet_engine::commands::FragSetup;
use lorafleet_engine::machine::{
    Dev, FragStatusWhen, Level, Outcome, Run, Settings, SettingsPart, Step, Target,
};
use lorafleet_engine::packages::data_fragments;

/// A session's encoded fragment frames.
type Frames = Arc<Vec<Vec<u8>>>;

/// The engine as a campaign driver. Holds a cache of encoded fragments and tells the TS003
/// responder how its devices sync their clocks.
#[derive(Default)]
pub struct EngineDriver {
    /// By campaign and TS004 version: a mixed fleet's waves run sessions of either version.
    frames: Mutex<HashMap<(i64, u8), Frames>>,
    running: Arc<RunningPackages>,
    /// Per campaign, where its last step held the simulated network's clock (see
    /// [`CampaignDriver::not_due`]).
    holds: Mutex<HashMap<i64, DateTime<Utc>>>,
}

/// A step put off for the clock is looked at again after at least this (real time): each look
/// costs the runner a claim and a write. (Its reads of the clock are looks, `peek_now`, which
/// do not keep the clock standing.) Short against a step's cycle on an accelerated network (its
/// 20 ms floor, `MIN_REAL_STEP`, and the clock's 15 ms standing after the step), where a 20 ms
/// recheck after a look a little early was a third of the cycle.
const CLOCK_RECHECK_MIN: Duration = Duration::from_millis(5);
/// ...and at most this.
const CLOCK_RECHECK_MAX: Duration = Duration::from_millis(250);

fn io(ctx: &DriverContext) -> Io<'_> {
    Io {
        db: &ctx.db,
        network: ctx.network.as_ref(),
        changes: &ctx.changes,
    }
}

/// The campaign field each part of the engine's settings comes from.
fn field_of(part: SettingsPart) -> &'static str {
    match part {
        SettingsPart::GroupId => "multicast.group_id",
        SettingsPart::MulticastSession => "multicast",
        SettingsPart::Fragmentation => "fragmentation",
    }
}

/// The engine's settings for a campaign, checked: every command they make can be encoded.
pub fn settings(c: &Campaign, status_port: u8) -> Result<Settings, DriverError> {
    let s = unchecked_settings(c, status_port)?;
    match s.check() {
        Ok(()) => Ok(s),
        Err(errors) => Err(DriverError::Invalid(
            errors
                .iter()
                .map(|e| format!("{}: {e}", field_of(e.part)))
                .collect::<Vec<_>>()
                .join("; "),
        )),
    }
}

/// [`settings`]' problems as field errors, for the preflight (a 422 at start).
fn settings_errors(c: &Campaign, status_port: u8) -> Vec<FieldError> {
    let s = match unchecked_settings(c, status_port) {
        Ok(s) => s,
        Err(e) => {
            return vec![FieldError {
                field: "fragmentation".into(),
                error: e.to_string(),
            }]
        }
    };
    let Err(errors) = s.check() else {
        return Vec::new();
    };
    errors
        .into_iter()
        .map(|e| FieldError {
            field: field_of(e.part).into(),
            error: e.error,
        })
        .collect()
}

fn unchecked_settings(c: &Campaign, status_port: u8) -> Result<Settings, DriverError> {
    let s = &c.settings;
    let frag = FragSetup::for_image(
        c.payload.len(),
        s.fragmentation.fragment_size,
        s.fragmentation.session_index,
        s.multicast.group_id,
        s.fragmentation.block_ack_delay,
        s.fragmentation.matrix,
        s.descriptor(),
    )
    .map_err(DriverError::Invalid)?;
    Ok(Settings {
        group_id: s.multicast.group_id,
        class: match s.multicast.class {
            campaigns::MulticastClass::C => MulticastClass::C,
            campaigns::MulticastClass::B => MulticastClass::B {
                ping_slot_periodicity: s.multicast.ping_slot_periodicity,
            },
        },
        dr: s.multicast.dr,
        frequency: s.multicast.frequency,
        timeout_exp: s.multicast.timeout_exp,
        unicast_timeout: TimeDelta::seconds(i64::from(s.unicast.timeout_s)),
        attempts: s.unicast.attempts,
        frag,
        redundancy: s.fragmentation.redundancy as usize,
        frag_status: match s.request_frag_status {
            FragStatusRequest::None => FragStatusWhen::Never,
            FragStatusRequest::AfterEnqueue => FragStatusWhen::AfterEnqueue,
            FragStatusRequest::AfterSession => FragStatusWhen::AfterSession,
        },
        check: s.engine.check,
        verify: s.engine.verify,
        reboot_delay: TimeDelta::seconds(i64::from(s.engine.reboot_delay_s)),
        status_port,
        check_method: s.engine.check_method,
        verify_method: s.engine.verify_method,
        fm_port: lorafleet_codec::firmware_management::DEFAULT_F_PORT,
        reboot_with: s.engine.reboot_with,
        adaptive: adaptive_parity(&s.fragmentation, &frag),
    })
}

/// The engine's adaptive-parity settings, defaults filled in from M and BlockAckDelay.
fn adaptive_parity(
    f: &campaigns::FragmentationSettings,
    frag: &FragSetup,
) -> Option<AdaptiveParity> {
    if f.parity != campaigns::ParityMode::Adaptive {
        return None;
    }
    Some(AdaptiveParity {
        group: f.parity_group.map(|g| g as usize),
        status_wait: f.status_wait_s.map_or_else(
            || AdaptiveParity::default_status_wait(frag.block_ack_delay),
            |w| TimeDelta::milliseconds((w * 1000.0) as i64),
        ),
    })
}

/// Each device with its key, and its layers (override packages, limits).
fn device_starts(c: &Campaign) -> Result<(Vec<DeviceStart>, Vec<DeviceLayers>), DriverError> {
    let st = &c.settings;
    c.devices
        .iter()
        .map(|d| {
            let start = DeviceStart {
                dev_eui: d
                    .dev_eui
                    .parse()
                    .map_err(|e: crate::devices::BadDevEui| DriverError::Invalid(e.to_string()))?,
                root: c.keys.root_key(&d.dev_eui, &st.lorawan_version),
            };
            let layers = DeviceLayers {
                packages: st
                    .device_overrides
                    .get(&d.dev_eui)
                    .map(|o| o.packages)
                    .unwrap_or_default(),
                limits: campaigns::packages::limits_for(
                    &d.dev_eui,
                    st.device_limits,
                    &st.device_overrides,
                    st.model_device_limits,
                ),
            };
            Ok((start, layers))
        })
        .collect::<Result<Vec<_>, DriverError>>()
        .map(|v| v.into_iter().unzip())
}

/// What the check and the verification compare with.
pub fn target(c: &Campaign) -> Target {
    let t = c.firmware.trailer.as_ref();
    Target {
        image_len: c.payload.len(),
        version: t.map(|t| t.version),
        to_version: c.firmware.metadata.to_version.clone(),
        from_version: c.firmware.metadata.from_version.clone(),
        is_delta: t.is_some_and(|t| t.kind != "full"),
    }
}

/// The campaign stage a device's step shows as.
pub fn stage(d: &Dev) -> Stage {
    match d.step {
        Step::Check => Stage::Check,
        Step::McGroupSetup => Stage::McGroupSetup,
        Step::FragSessionSetup => Stage::FragSessionSetup,
        Step::Ready | Step::McSessionSetup => Stage::McSessionSetup,
        Step::InSession => Stage::Fragments,
        Step::FragStatus if d.diagnosing => Stage::Verify,
        Step::FragStatus => Stage::FragStatus,
        Step::ImageStatus | Step::Reboot | Step::RebootWait | Step::Verify => Stage::Verify,
        // Neither success nor failure: the process completed, the outcome says the rest.
        Step::Done if d.outcome == Some(Outcome::DeliveredUnverified) => Stage::Completed,
        Step::Done if d.outcome.is_some_and(Outcome::succeeded) => Stage::Completed,
        Step::Done => Stage::Failed,
    }
}

/// Campaign records (log, progress, step times) are on the network's clock, like the engine's
/// own times and every uplink and answer: one clock for all the fleet shows (issue 10).
fn report(d: &Dev) -> DeviceReport {
    DeviceReport {
        mc_group_setup_at: d.mc_group_setup_at,
        frag_session_setup_at: d.frag_session_setup_at,
        mc_session_setup_at: d.mc_session_setup_at,
        frag_status_at: d.frag_status_at,
        completed_at: d.completed_at,
        error: d.error.clone(),
        attempts: Some(d.attempts),
        next_action_at: d.next_action_at,
        driver_json: serde_json::to_value(d).ok(),
        ..DeviceReport::new(d.dev_eui.to_string(), stage(d))
    }
}

fn log_line(l: EngineLog) -> LogLine {
    LogLine {
        at: l.at,
        level: match l.level {
            Level::Info => LogLevel::Info,
            Level::Warning => LogLevel::Warning,
            Level::Error => LogLevel::Error,
        },
        from_service: false,
        dev_eui: l.dev_eui.map(|e| e.to_string()),
        message: l.message,
        dedup_key: None,
    }
}

/// How long (real time) before looking again whether a clock that shows `now` and runs at most
/// `scale` times faster than real time reached `hold`; `None` once it has.
fn wait_for_clock(hold: DateTime<Utc>, now: DateTime<Utc>, scale: f64) -> Option<Duration> {
    let ahead = (hold - now).to_std().ok().filter(|d| !d.is_zero())?;
    Some(
        ahead
            .div_f64(scale.max(1e-6))
            .clamp(CLOCK_RECHECK_MIN, CLOCK_RECHECK_MAX),
    )
}

fn internal(e: impl std::fmt::Display) -> DriverError {
    DriverError::Unavailable(format!("engine: {e}"))
}

/// The engine's state of a campaign as stored by the runner.
fn load_state(c: &Campaign) -> Result<(Run, Vec<Dev>), DriverError> {
    let run: Run = c
        .driver_state
        .clone()
        .ok_or_else(|| DriverError::Invalid("the engine's campaign state is missing".into()))
        .and_then(|v| super::engine_state::load(v).map_err(DriverError::Invalid))?;
    let devs = c
        .devices
        .iter()
        .map(|d| {
            d.driver_json
                .clone()
                .ok_or_else(|| format!("device {} has no engine state", d.dev_eui))
                .and_then(|v| serde_json::from_value::<Dev>(v).map_err(|e| e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(DriverError::Invalid)?;
    Ok((run, devs))
}

/// A device's campaign outcome for its firmware history (stored with the step that reached
/// it, under the campaign's lease).
fn history_note(ctx: &DriverContext, c: &Campaign, d: &Dev) -> Option<HistoryNote> {
    let outcome = d.outcome?;
    let what = match outcome {
        Outcome::Verified => "verified: runs the new firmware".to_string(),
        Outcome::Completed => "session completed (the version was not verified)".to_string(),
        Outcome::NotUpdated => format!("not updated: {}", d.error.as_deref().unwrap_or("")),
        Outcome::Unreachable => format!("unreachable: {}", d.error.as_deref().unwrap_or("")),
        Outcome::Refused => format!("refused: {}", d.error.as_deref().unwrap_or("")),
        Outcome::DeliveredUnverified => format!(
            "fragments delivered, version not verifiable: {}",
            d.error.as_deref().unwrap_or("")
        ),
    };
    Some(HistoryNote {
        dev_eui: d.dev_eui.to_string(),
        at: d.completed_at.unwrap_or_else(|| ctx.network.now()),
        version: (outcome == Outcome::Verified)
            .then_some(d.running_version)
            .flatten(),
        outcome: serde_json::to_value(outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string)),
        message: format!(
            "campaign #{} \"{}\" ({}): {what}",
            c.id, c.name, c.firmware.file_name
        ),
    })
}

impl EngineDriver {
    /// One poll: the engine's step on the stored state.
    async fn poll_step(
        &self,
        ctx: &DriverContext,
        c: &Campaign,
    ) -> Result<PollOutcome, DriverError> {
        let s = settings(c, ctx.config.status_protocol.f_port)?;
        let t = target(c);
        let (mut run, mut devs) = load_state(c)?;
        let before = devs.clone();
        let frames = self.frames(c, &s, step::session_fragmentation(&devs).version)?;
        let group = GroupInfo {
            // The campaign's id and its run's random multicast address make the name unique
            // to this campaign (also among several lorafleet installations on one ChirpStack):
            // a takeover finds the group by it (see `step::create_group`).
            name: format!(
                "lorafleet campaign {} ({}) {}",
                c.id,
                c.name,
                hex::encode(run.mc_addr)
            ),
            application_id: c.inventory.iter().find_map(|k| k.application_id.clone()),
            gateways: self.gateways(ctx, c, &run).await?,
        };
        let stepped = step::step(
            io(ctx),
            &mut run,
            &mut devs,
            &s,
            &t,
            &frames,
            &group,
            Self::fragment_airtime(ctx, &s),
        )
        .await;
        self.note_hold(ctx, c.id, stepped.as_ref().ok().and_then(|s| s.hold));
        tracing::debug!(campaign = c.id, phase = ?run.phase, hold = ?stepped.as_ref().ok().and_then(|s| s.hold), "engine step");
        let stepped = stepped.map_err(internal)?;
        let history = devs
            .iter()
            .zip(&before)
            .filter(|(_, b)| b.outcome.is_none())
            .filter_map(|(d, _)| history_note(ctx, c, d))
            .collect();
        let mut outcome = self.outcome(c, &run, &devs, &before, stepped);
        outcome.history = history;
        Ok(outcome)
    }

    pub fn new(running: Arc<RunningPackages>) -> EngineDriver {
        EngineDriver {
            frames: Mutex::default(),
            running,
            holds: Mutex::default(),
        }
    }

    /// The session's fragments in the devices' TS004 version.
    fn frames(
        &self,
        c: &Campaign,
        s: &Settings,
        version: u8,
    ) -> Result<Arc<Vec<Vec<u8>>>, DriverError> {
        let mut cache = self.frames.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = cache.get(&(c.id, version)) {
            return Ok(f.clone());
        }
        let frames = Arc::new(
            data_fragments(version, &c.payload, &s.frag, s.redundancy)
                .map_err(DriverError::Invalid)?,
        );
        cache.insert((c.id, version), frames.clone());
        Ok(frames)
    }

    fn forget(&self, id: i64) {
        self.frames
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(campaign, _), _| *campaign != id);
        self.note_hold_at(id, None);
    }

    /// Remembers where the campaign's step held the clock, on a simulated network only (a
    /// real network's clock does not wait, and answers there must be read at once).
    fn note_hold(&self, ctx: &DriverContext, id: i64, hold: Option<DateTime<Utc>>) {
        let simulated = ctx.network.kind() == NetworkKind::Simulated;
        self.note_hold_at(id, hold.filter(|_| simulated));
    }

    fn note_hold_at(&self, id: i64, hold: Option<DateTime<Utc>>) {
        let mut holds = self.holds.lock().unwrap_or_else(|e| e.into_inner());
        match hold {
            Some(at) => holds.insert(id, at),
            None => holds.remove(&id),
        };
    }

    /// Airtime of one fragment frame at the campaign's DR, for pacing the steps.
    /// The gateways to bind the group to, read only while the group is still to be made (the
    /// uplinks up to that moment count).
    async fn gateways(
        &self,
        ctx: &DriverContext,
        c: &Campaign,
        run: &Run,
    ) -> Result<Vec<String>, DriverError> {
        if run.group.is_some()
            || !crate::campaigns::gateways::applies(
                &ctx.config,
                c.driver,
                &c.settings.multicast.gateways,
            )
        {
            return Ok(Vec::new());
        }
        let devices: Vec<String> = c.devices.iter().map(|d| d.dev_eui.clone()).collect();
        let choice = crate::campaigns::gateways::for_campaign(
            &ctx.db,
            &devices,
            &c.settings.multicast.gateways,
            ctx.now(),
        )
        .await
        .map_err(|e| DriverError::Invalid(format!("reading the devices' gateways: {e}")))?;
        Ok(choice.gateways)
    }

    fn fragment_airtime(ctx: &DriverContext, s: &Settings) -> TimeDelta {
        let ms = crate::config::parse_region(&ctx.config.network.region)
            .map(|r| lrwn::region::get(r, false, false))
            .map_or(1000.0, |r| {
                lorafleet_engine::airtime::airtime_ms(
                    r.as_ref(),
                    s.dr,
                    usize::from(s.frag.frag_size) + 3,
                    false,
                )
            });
        TimeDelta::microseconds((ms * 1000.0) as i64)
    }

    fn outcome(
        &self,
        c: &Campaign,
        run: &Run,
        devs: &[Dev],
        before: &[Dev],
        stepped: Stepped,
    ) -> PollOutcome {
        let devices = devs
            .iter()
            .zip(before.iter().map(Some).chain(std::iter::repeat(None)))
            .filter(|(d, b)| b.is_none_or(|b| b != *d))
            .map(|(d, _)| report(d))
            .collect();
        let finished = stepped.done.then(|| match &run.failure {
            None => Finished::Completed,
            Some(why) => Finished::Failed(why.clone()),
        });
        if finished.is_some() {
            self.forget(c.id);
            self.running.forget(devs);
        } else {
            self.running.note(devs);
        }
        PollOutcome {
            devices,
            log: stepped.log.into_iter().map(log_line).collect(),
            driver_state: super::engine_state::save(run),
            finished,
            next_poll: Some(stepped.next.max(Duration::from_millis(5))),
            forget_keys: false,
            downlinks: stepped.downlinks,
            history: Vec::new(),
        }
    }
}

#[async_trait]
impl CampaignDriver for EngineDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Engine
    }

    async fn preflight(
        &self,
        ctx: &DriverContext,
        c: &Campaign,
    ) -> Result<Vec<FieldError>, DriverError> {
        let kind = ctx.network.kind();
        if !matches!(kind, NetworkKind::Simulated | NetworkKind::ChirpstackV4) {
            return Ok(vec![FieldError {
                field: "driver".into(),
                error: format!(
                    "the engine sends multicast through the network server, which network.kind = \"{}\" cannot do; use chirpstack-v4 or simulated, or another driver",
                    kind.as_str()
                ),
            }]);
        }
        let mut errors = settings_errors(c, ctx.config.status_protocol.f_port);
        for d in &c.devices {
            if c.keys
                .root_key(&d.dev_eui, &c.settings.lorawan_version)
                .is_some()
            {
                continue;
            }
            let eui: DevEui = d
                .dev_eui
                .parse()
                .map_err(|e: crate::devices::BadDevEui| DriverError::Invalid(e.to_string()))?;
            let keys = ctx.network.device_keys(eui).await.map_err(|e| match e {
                crate::network::NetworkError::Timeout(_)
                | crate::network::NetworkError::Unreachable { .. } => {
                    DriverError::Unavailable(e.to_string())
                }
                e => DriverError::Refused(e.to_string()),
            })?;
            if keys.is_none_or(|k| k.gen_app_key.is_none() && k.app_key.is_none()) {
                errors.push(FieldError {
                    field: format!("keys.per_device.{}", d.dev_eui),
                    error: format!(
                        "no key material for {}: the network server has no GenAppKey or AppKey for it; give one with the campaign",
                        d.dev_eui
                    ),
                });
            }
        }
        Ok(errors)
    }

    async fn start(&self, ctx: &DriverContext, c: &Campaign) -> Result<PollOutcome, DriverError> {
        let s = settings(c, ctx.config.status_protocol.f_port)?;
        let (starts, own) = device_starts(c)?;
        let layers = CampaignLayers {
            packages: c.settings.packages,
            status_port: s.status_port,
            image: &c.payload,
            // Wraps after 65536 campaigns; a device then needs its counter reset.
            session_cnt: (c.id & 0xffff) as u16,
            frag_index: s.frag.index,
            descriptor: s.frag.descriptor,
            session: c.session,
        };
        let (run, devs, log) = step::start_with(io(ctx), &s, &starts, &own, &layers)
            .await
            .map_err(internal)?;
        self.running.note(&devs);
        let t = target(c);
        let history = devs
            .iter()
            .filter_map(|d| history_note(ctx, c, d))
            .collect();
        let mut log: Vec<LogLine> = log.into_iter().map(log_line).collect();
        if t.version.is_none() && t.to_version.is_none() && s.verify {
            log.push(LogLine {
                at: ctx.network.now(),
                ..LogLine::warning(
                    "the image has no signed trailer and no to_version: devices cannot be verified, only their sessions completed",
                )
            });
        }
        let next = Duration::from_millis(5);
        Ok(PollOutcome {
            devices: devs.iter().map(report).collect(),
            log,
            driver_state: super::engine_state::save(&run),
            finished: None,
            next_poll: Some(next),
            // Each device's McKey is now stored encrypted for it; the root keys are not needed.
            forget_keys: true,
            downlinks: Vec::new(),
            history,
        })
    }

    async fn poll(&self, ctx: &DriverContext, c: &Campaign) -> Result<PollOutcome, DriverError> {
        self.poll_step(ctx, c).await
    }

    /// Not before the simulated clock reaches where the last step held it: the clock stands
    /// there until the step comes, so a step before it (an answer's wake-up, a poll on the real
    /// clock while a loaded machine runs the simulation slower than its time_scale) would read
    /// and store every device of the campaign for a fraction of a simulated second. Without
    /// this, steps came by real time and a larger fleet (slower steps, a slower clock) took
    /// more of them per simulated second, each over more devices.
    fn not_due(&self, ctx: &DriverContext, campaign_id: i64) -> Option<Duration> {
        let at = *self
            .holds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&campaign_id)?;
        wait_for_clock(at, ctx.network.peek_now(), ctx.network.time_scale())
    }

    async fn cancel(&self, ctx: &DriverContext, c: &Campaign) -> Result<(), DriverError> {
        self.forget(c.id);
        let Ok((run, devs)) = load_state(c) else {
            return Ok(());
        };
        step::hold_clock(io(ctx), &run, None);
        self.running.forget(&devs);
        match (&run.group, run.group_deleted) {
            (Some(id), false) => ctx
                .network
                .delete_multicast_group(id)
                .await
                .map_err(|e| DriverError::Unavailable(e.to_string())),
            _ => Ok(()),
        }
    }
}

/// Wakes the campaign runner for the engine's campaigns as soon as a device's answer is
/// committed (FPorts 200, 201, the Version & Status port, and whatever FPorts a running
/// campaign's devices answer on), instead of waiting for the next poll; bursts are taken
/// together.
pub fn spawn_wakeups(app: &crate::AppState) {
    use tokio::sync::broadcast::error::RecvError;
    let mut uplinks = app.uplinks.subscribe();
    let status_port = app.config.status_protocol.f_port;
    let running = app.running_packages.clone();
    let app = Arc::downgrade(app);
    tokio::spawn(async move {
        loop {
            let relevant = match uplinks.recv().await {
                Ok(c) => match &c.event.body {
                    crate::ingest::EventBody::Up(up) => {
                        let port = up.f_port.unwrap_or(0);
                        [
                            lorafleet_engine::ports::MULTICAST_SETUP,
                            lorafleet_engine::ports::FRAGMENTATION,
                            status_port,
                            lorafleet_codec::firmware_management::DEFAULT_F_PORT,
                        ]
                        .contains(&port)
                            || running.answers_on(c.event.dev_eui, port)
                    }
                    _ => false,
                },
                // Missed some, maybe answers among them: one wake-up covers them all.
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => return,
            };
            if !relevant {
                continue;
            }
            let Some(app) = app.upgrade() else {
                return;
            };
            let due = crate::storage::campaigns::make_started_engine_campaigns_due(&app.db).await;
            if due.is_ok_and(|due| due) {
                app.campaigns.wake.notify_one();
            }
            drop(app);
            // Let a burst of answers gather before the next wake-up.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An engine setting refused by the engine's check is reported on the campaign's field.
    #[test]
    fn unencodable_settings_are_named_by_the_campaign_field() {
        assert_eq!(field_of(SettingsPart::GroupId), "multicast.group_id");
        assert_eq!(field_of(SettingsPart::MulticastSession), "multicast");
        assert_eq!(field_of(SettingsPart::Fragmentation), "fragmentation");
    }

    /// A poll before the step's hold waits for the clock, at least as long as the clock needs
    /// at its full speed (within the recheck bounds); at the hold or past it, the step is due.
    #[test]
    fn a_step_waits_for_the_clock_to_reach_its_hold() {
        let hold = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let before = |s: i64| hold - TimeDelta::seconds(s);
        assert_eq!(
            wait_for_clock(hold, before(20), 1000.0),
            Some(Duration::from_millis(20))
        );
        assert_eq!(
            wait_for_clock(hold, before(1), 1000.0),
            Some(CLOCK_RECHECK_MIN)
        );
        assert_eq!(
            wait_for_clock(hold, before(60), 1.0),
            Some(CLOCK_RECHECK_MAX)
        );
        assert_eq!(wait_for_clock(hold, hold, 1000.0), None);
        assert_eq!(wait_for_clock(hold, before(-5), 1000.0), None);
    }
}
