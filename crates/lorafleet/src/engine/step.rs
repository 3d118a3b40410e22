//! The engine's I/O around the pure state machine (`lorafleet_engine::machine`): reading the devices'
//! answers from the committed uplinks, sending unicast commands, creating and deleting the
//! multicast group and streaming the fragments. One [`step`] does one round of all that; the
//! caller stores [`Run`] and the [`Dev`]s afterwards and calls again after [`Stepped::next`].
//!
//! Answers are read from the `uplinks` table past a cursor kept in the run, so an answer that
//! was committed while lorafleet was down (or between two steps) is never missed; the cursor
//! re-reads a window of recent rows ([`new_answers`]), so neither is one that another instance
//! committed out of id order.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rand::Rng;

use lorafleet_engine::commands::Reply;
use lorafleet_engine::keys::{self, RootKey};
use lorafleet_engine::machine::{
    Action, Dev, Level, Method, Outcome, Phase, Run, Settings, Step, Target,
};
use lorafleet_engine::packages::parse_uplink;
use lorafleet_engine::packages::{Packages, Versioned};
use lorafleet_engine::sessions::{self, Session};

use super::packages::{self as speaking, CampaignLayers, DeviceLayers};
use super::{send_unicasts, Io};
use crate::devices::DevEui;
use crate::network::{Downlink, MulticastGroup};
use crate::storage;
use crate::storage::campaigns::SentDownlink;

/// Fragments kept queued on the network ahead of the transmitter: enough that the transmitter
/// never waits for the next step (a gap would push fragments past the session's end), while a
/// restart re-sends at most this many (devices ignore fragments they are past).
const WINDOW: usize = 512;
/// While waiting for answers, steps this often in the network's time (in the application,
/// answers also wake the campaign runner at once: the engine driver's `spawn_wakeups`)...
const ANSWER_POLL_SIM: TimeDelta = TimeDelta::seconds(1);
/// While streaming, steps this often in the network's time (so the last fragment's time is
/// known to within this)...
const STREAM_POLL_SIM: TimeDelta = TimeDelta::seconds(10);
/// ...but at most this often and at least this often in real time: every step costs the
/// runner a load of the campaign.
const MIN_POLL: Duration = Duration::from_millis(50);
const MAX_POLL: Duration = Duration::from_millis(250);
/// On an accelerated simulated network, at most this often in the network's time instead of
/// [`MIN_POLL`] (which at time_scale 1000 is 50 simulated seconds, several times a status
/// round's wait): its clock waits at the step's hold, so the steps per simulated minute, not
/// per real second, are what this bounds, whatever the fleet's size and the machine's load.
const MIN_STEP_SIM: TimeDelta = TimeDelta::seconds(5);
/// ...but never closer than this in real time: each step's calls into a simulated network keep
/// its clock standing for the simulator's grace after them (15 ms, `LORAFLEET_GRACE`), so
/// steps driven closer than that (5 simulated seconds at time_scale 400 is 12.5 ms) would
/// stop the clock for good.
const MIN_REAL_STEP: Duration = Duration::from_millis(20);

/// A device to update, with its root key when the campaign brought one.
#[derive(Debug, Clone)]
pub struct DeviceStart {
    pub dev_eui: DevEui,
    pub root: Option<RootKey>,
}

/// A line for the campaign log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub at: DateTime<Utc>,
    pub level: Level,
    pub dev_eui: Option<DevEui>,
    pub message: String,
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stepped {
    pub log: Vec<LogLine>,
    /// Step again after this long (real time).
    pub next: Duration,
    pub done: bool,
    /// The unicast commands sent, for the caller to record with the step.
    pub downlinks: Vec<SentDownlink>,
    /// Where the step held a simulated network's clock: the time (on the network's clock) the
    /// next step is due, which a step before it would spend on nothing.
    pub hold: Option<DateTime<Utc>>,
}

/// Binds the new group to the campaign's gateways; one that cannot be added is said, and the
/// network then sends from the others.
async fn bind_gateways(
    io: Io<'_>,
    group_id: &str,
    gateways: &[String],
    now: DateTime<Utc>,
    log: &mut Vec<LogLine>,
) {
    if gateways.is_empty() {
        return;
    }
    let mut bound = Vec::new();
    for gw in gateways {
        match io.network.add_multicast_gateway(group_id, gw).await {
            Ok(()) => bound.push(gw.as_str()),
            Err(e) => log.push(line(
                now,
                Level::Warning,
                None,
                format!("could not bind gateway {gw} to the multicast group: {e}"),
            )),
        }
    }
    log.push(line(
        now,
        Level::Info,
        None,
        format!(
            "multicast group bound to gateway{} {}",
            if bound.len() == 1 { "" } else { "s" },
            bound.join(", ")
        ),
    ));
}

/// What the network needs to create the group besides the run's keys.
#[derive(Debug, Clone, Default)]
pub struct GroupInfo {
    pub name: String,
    pub application_id: Option<String>,
    /// Gateways to bind the group to once created (empty: the network's choice).
    pub gateways: Vec<String>,
}

/// The device's root key: the campaign's, else the network server's; the error says why
/// there is none.
async fn root_key(io: Io<'_>, d: &DeviceStart) -> Result<RootKey, String> {
    let root = match d.root {
        Some(r) => Ok(Some(r)),
        None => io.network.device_keys(d.dev_eui).await.map(|k| {
            k.and_then(|k| {
                k.gen_app_key
                    .map(RootKey::GenAppKey)
                    .or(k.app_key.map(RootKey::AppKey))
            })
        }),
    };
    match root {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err("no key material: give a GenAppKey (LoRaWAN 1.0.x) or AppKey (1.1) with the campaign, or store it in the network server".to_string()),
        Err(e) => Err(format!("could not read the device's keys from the network server: {e}")),
    }
}

/// [`start_with`] for a campaign that says nothing about packages and limits: each device
/// speaks what its profile on the network server says, else the defaults.
pub async fn start(
    io: Io<'_>,
    s: &Settings,
    devices: &[DeviceStart],
) -> anyhow::Result<(Run, Vec<Dev>, Vec<LogLine>)> {
    let campaign = CampaignLayers {
        packages: Default::default(),
        status_port: s.status_port,
        image: &[],
        session_cnt: 0,
        frag_index: s.frag.index,
        descriptor: s.frag.descriptor,
        session: None,
    };
    start_with(io, s, devices, &[], &campaign).await
}

/// Prepares a campaign: a random McAddr and McKey, each device's encrypted McKey (root keys
/// from the campaign, else from the network server), each device's packages (its profile on
/// the network server under the campaign's layers; `layers[i]` for `devices[i]`, the defaults
/// past its end), and the uplink cursor. Sends nothing.
pub async fn start_with(
    io: Io<'_>,
    s: &Settings,
    devices: &[DeviceStart],
    layers: &[DeviceLayers],
    campaign: &CampaignLayers<'_>,
) -> anyhow::Result<(Run, Vec<Dev>, Vec<LogLine>)> {
    let now = io.network.now();
    let (mc_addr, mc_key) = {
        let mut rng = rand::thread_rng();
        // McAddr 0 would look like an unset address in every tool that shows it.
        let addr = rng.gen_range(1..=u32::MAX).to_be_bytes();
        (addr, rng.gen::<[u8; 16]>())
    };
    let mut run = Run::new(s, mc_addr, mc_key, now);
    run.uplink_cursor = storage::uplinks::max_id(io.db).await?;
    let mut devs = Vec::with_capacity(devices.len());
    let mut log = Vec::new();
    for (i, d) in devices.iter().enumerate() {
        let own = layers.get(i).copied().unwrap_or_default();
        let speaks = match root_key(io, d).await {
            Ok(root) => speaking::resolve(io.network, d.dev_eui, root, &own, campaign)
                .await
                .map(|(p, warning)| (root, p, warning)),
            Err(why) => Err(why),
        };
        let (root, speaks, warning) = match speaks {
            Ok(x) => x,
            Err(why) => {
                log.push(line(now, Level::Error, Some(d.dev_eui), why.clone()));
                devs.push(Dev::refused(d.dev_eui, why, now));
                continue;
            }
        };
        if let Some(w) = warning {
            log.push(line(now, Level::Warning, Some(d.dev_eui), w));
        }
        if speaks.packages != Packages::defaults(s.status_port) {
            let says = format!("speaks {}", speaks.packages.describe());
            log.push(line(now, Level::Info, Some(d.dev_eui), says));
        }
        let eui = d.dev_eui.to_string();
        let vt = storage::devices::versioning_type(io.db, &eui).await?;
        let mut dev = Dev::new(
            d.dev_eui,
            keys::encrypted_mc_key(root, mc_key),
            vt.and_then(|v| u8::try_from(v).ok()),
            s,
            now,
        );
        // `auto` remembers across campaigns too: a device known to answer only Firmware
        // Management is not first given a Version & Status check's worth of retries.
        if dev.step == Step::Check
            && s.check_method == Method::Auto
            && storage::firmware_management::answers_only_firmware_management(io.db, &eui).await?
        {
            dev.trying = Some(Method::FirmwareManagement);
        }
        dev.packages = Some(speaks);
        devs.push(dev);
    }
    one_fragmentation_session(&mut devs, campaign.session, now, &mut log);
    // Until the first step, however long storing this start takes: the setup's deadlines
    // count from `now`.
    hold_clock(io, &run, Some(Duration::ZERO));
    log.push(line(
        now,
        Level::Info,
        None,
        format!(
            "engine started: McAddr {}, {} devices, setup deadline {}",
            hex::encode(mc_addr),
            devs.iter().filter(|d| !d.is_done()).count(),
            run.setup_deadline.to_rfc3339()
        ),
    ));
    Ok((run, devs, log))
}

/// The TS004 version and FPort of the campaign's multicast session: what its devices speak
/// (the defaults when none says).
pub fn session_fragmentation(devs: &[Dev]) -> Versioned {
    devs.iter()
        .filter(|d| d.outcome != Some(Outcome::Refused))
        .find_map(|d| d.packages.map(|p| p.packages.fragmentation))
        .unwrap_or(Packages::defaults(0).fragmentation)
}

/// One multicast session carries one FPort and one FEC matrix, so its devices must share
/// their TS004 version and FPort (`lorafleet_engine::sessions`). The campaign's start put each
/// device in the wave of its session (`campaigns::waves::split_by_session`); a device that
/// speaks otherwise now (its profile changed since, or could not be read then) is refused
/// before anything is sent to it, with what it speaks. Without a session given (the engine
/// started directly), the most common one is the session.
fn one_fragmentation_session(
    devs: &mut [Dev],
    session: Option<Session>,
    now: DateTime<Utc>,
    log: &mut Vec<LogLine>,
) {
    let spoken: Vec<Session> = devs
        .iter()
        .filter_map(|d| d.packages.map(|p| Session::of(&p.packages)))
        .collect();
    let Some(chosen) = session.or_else(|| sessions::groups(&spoken).0.first().copied()) else {
        return;
    };
    for d in devs.iter_mut() {
        let Some(own) = d.packages.map(|p| Session::of(&p.packages)) else {
            continue;
        };
        if own == chosen {
            continue;
        }
        let why = format!(
            "it speaks {}, its wave's multicast session {} (its device profile changed since the campaign started?); update it in a campaign of its own",
            own.describe(),
            chosen.describe()
        );
        log.push(line(now, Level::Error, Some(d.dev_eui), why.clone()));
        *d = Dev::refused(d.dev_eui, why, now);
    }
}

fn line(at: DateTime<Utc>, level: Level, dev_eui: Option<DevEui>, message: String) -> LogLine {
    LogLine {
        at,
        level,
        dev_eui,
        message,
    }
}

/// Reads the answers committed since the last step, in commit order, each on its device's
/// own FPorts and in its package versions.
async fn replies(
    io: Io<'_>,
    run: &mut Run,
    devs: &[Dev],
    s: &Settings,
) -> anyhow::Result<Vec<(usize, DateTime<Utc>, Reply)>> {
    let index: HashMap<String, usize> = devs
        .iter()
        .enumerate()
        .map(|(i, d)| (d.dev_eui.to_string(), i))
        .collect();
    let speaks: Vec<_> = devs.iter().map(|d| d.speaks(s).packages).collect();
    let mut ports: Vec<u8> = speaks.iter().flat_map(|p| p.answer_ports()).collect();
    ports.sort_unstable();
    ports.dedup();
    let rows = new_answers(io.db, run, &ports, Utc::now()).await?;
    let mut out = Vec::new();
    for row in rows {
        let Some(&i) = index.get(row.dev_eui.as_str()) else {
            continue;
        };
        let Some(at) = storage::parse_time(&row.received_at) else {
            continue;
        };
        let port = u8::try_from(row.f_port).unwrap_or(0);
        let p = &speaks[i];
        // Firmware Management answers have their own reader (unless a device shares its port
        // with Version & Status).
        let replies = if port == p.firmware_management.f_port && port != p.version_status.f_port {
            lorafleet_engine::machine::parse_firmware_management(&row.data)
        } else {
            parse_uplink(port, &row.data, p)
        };
        for reply in replies {
            out.push((i, at, reply));
        }
    }
    Ok(out)
}

/// How long a write may take from taking its uplink ids to committing them (the ingest
/// writer commits batches in milliseconds): a row is looked for below a seen one this long.
pub const COMMIT_LAG: TimeDelta = TimeDelta::seconds(10);

/// The uplinks on `ports` not read before, in id order, at `now` (real time). Safe under
/// concurrent writers (several instances on PostgreSQL), whose ids may commit out of order: a
/// row with an id below one already read can still appear, so rows are read from the cursor
/// on and those already seen skipped, and the cursor passes a row only after it was seen for
/// [`COMMIT_LAG`] (any lower id is committed or rolled back by then).
pub async fn new_answers(
    db: &storage::Db,
    run: &mut Run,
    ports: &[u8],
    now: DateTime<Utc>,
) -> storage::Result<Vec<storage::uplinks::StoredUplink>> {
    let rows = storage::uplinks::since(db, run.uplink_cursor, ports, 20_000).await?;
    let seen: std::collections::HashSet<i64> = run.recent_uplinks.iter().map(|r| r.0).collect();
    let fresh: Vec<_> = rows.into_iter().filter(|r| !seen.contains(&r.id)).collect();
    run.recent_uplinks.extend(fresh.iter().map(|r| (r.id, now)));
    run.recent_uplinks.sort_unstable_by_key(|r| r.0);
    let settled = run
        .recent_uplinks
        .iter()
        .filter(|r| r.1 <= now - COMMIT_LAG)
        .map(|r| r.0)
        .max();
    if let Some(settled) = settled {
        run.uplink_cursor = run.uplink_cursor.max(settled);
        let cursor = run.uplink_cursor;
        run.recent_uplinks.retain(|r| r.0 > cursor);
    }
    Ok(fresh)
}

/// A campaign between its setup and the session's end needs its group: if it has none (the
/// create failed in an earlier step), it is asked for again.
fn group_if_missing(run: &Run, devs: &[Dev], out: &mut Vec<Action>) {
    let wants_group = matches!(run.phase, Phase::SessionSetup | Phase::Session);
    if !wants_group
        || run.group.is_some()
        || out.iter().any(|a| matches!(a, Action::CreateGroup { .. }))
    {
        return;
    }
    let members = devs
        .iter()
        .filter(|d| matches!(d.step, Step::McSessionSetup | Step::InSession))
        .map(|d| d.dev_eui)
        .collect();
    out.push(Action::CreateGroup { members });
}

/// Deletes the campaign's multicast group, logging the outcome.
async fn delete_group(io: Io<'_>, run: &mut Run, now: DateTime<Utc>, log: &mut Vec<LogLine>) {
    let Some(id) = run.group.clone() else {
        return;
    };
    match io.network.delete_multicast_group(&id).await {
        Ok(()) => {
            run.group_deleted = true;
            log.push(line(
                now,
                Level::Info,
                None,
                "multicast group deleted".into(),
            ));
        }
        Err(e) => log.push(line(
            now,
            Level::Warning,
            None,
            format!("could not delete the multicast group {id}: {e}"),
        )),
    }
}

/// One round: answers in, state machine, commands out, fragments topped up.
#[allow(clippy::too_many_arguments)]
pub async fn step(
    io: Io<'_>,
    run: &mut Run,
    devs: &mut [Dev],
    s: &Settings,
    t: &Target,
    frames: &[Vec<u8>],
    group: &GroupInfo,
    fragment_airtime: TimeDelta,
) -> anyhow::Result<Stepped> {
    let stepped = step_once(io, run, devs, s, t, frames, group, fragment_airtime).await;
    if stepped.is_err() {
        // The caller retries on its own schedule (a failing database backs off for minutes):
        // the simulation must not wait for it meanwhile.
        hold_clock(io, run, None);
    }
    stepped
}

#[allow(clippy::too_many_arguments)]
async fn step_once(
    io: Io<'_>,
    run: &mut Run,
    devs: &mut [Dev],
    s: &Settings,
    t: &Target,
    frames: &[Vec<u8>],
    group: &GroupInfo,
    fragment_airtime: TimeDelta,
) -> anyhow::Result<Stepped> {
    let now = io.network.now();
    let mut out = Vec::new();
    for (i, at, reply) in replies(io, run, devs, s).await? {
        run.reply(&mut devs[i], reply, s, t, at, &mut out);
    }
    run.tick(devs, s, t, now, &mut out);
    group_if_missing(run, devs, &mut out);
    let mut log = Vec::new();
    // Unicast commands go out together (one write of the downlink list for all of them); the
    // group is created before, so it exists when the session requests arrive.
    let mut unicasts = Vec::new();
    for action in out {
        match action {
            Action::Unicast {
                dev_eui,
                f_port,
                data,
                what,
            } => {
                let downlink = Downlink {
                    dev_eui,
                    f_port,
                    data,
                    confirmed: false,
                };
                unicasts.push((downlink, what));
            }
            Action::CreateGroup { members } => {
                create_group(io, run, s, group, &members, now, &mut log).await
            }
            Action::DeleteGroup => delete_group(io, run, now, &mut log).await,
            Action::Multicast { f_port, data, what } => {
                // The engine names the package by its default FPort; the group listens on its
                // devices' own (FragSessionStatusReq reads the same in v1 and v2).
                let f_port = match f_port {
                    lorafleet_engine::ports::FRAGMENTATION => session_fragmentation(devs).f_port,
                    other => other,
                };
                multicast(io, run, f_port, &data, what, now, &mut log).await
            }
            Action::Log {
                level,
                dev_eui,
                message,
            } => log.push(line(now, level, dev_eui, message)),
        }
    }
    let downlinks = send_unicasts(io, &unicasts).await;
    for d in &downlinks {
        // A refused enqueue is retried like an unanswered command.
        if let Err(e) = &d.result {
            log.push(line(
                now,
                Level::Warning,
                Some(d.dev_eui),
                format!("could not queue {}: {e}", d.what),
            ));
        }
    }
    if run.phase == Phase::After && run.group.is_some() && !run.group_deleted {
        // An earlier delete failed; the group must not outlive the campaign.
        if let Some(id) = run.group.clone() {
            if io.network.delete_multicast_group(&id).await.is_ok() {
                run.group_deleted = true;
            }
        }
    }
    if run.streaming(now) {
        let f_port = session_fragmentation(devs).f_port;
        stream(io, run, s, (frames, f_port), now, &mut log).await;
    }
    let due = if run.phase == Phase::Session && run.fragments_sent_at.is_none() {
        (fragment_airtime * (WINDOW as i32 / 4)).min(STREAM_POLL_SIM)
    } else {
        run.next_wakeup(devs, s)
            .map_or(ANSWER_POLL_SIM, |at| at - now)
            .min(ANSWER_POLL_SIM)
    };
    let next = next_step(due, io.network.time_scale());
    let done = run.phase == Phase::Done;
    let hold = hold_clock(io, run, (!done).then_some(next));
    Ok(Stepped {
        log,
        // The clock runs towards the hold only once it stops standing after this step's last
        // request (the hold itself): a look before would find the step not due yet and come
        // back a recheck later, a fifth of a step's cycle lost each time.
        next: next + io.network.clock_stands_after_request(),
        done,
        downlinks,
        hold,
    })
}

/// Real time until the next step, which is `due` away on the network's clock running `scale`
/// times faster than real time: at least [`MIN_POLL`], or [`MIN_STEP_SIM`] (not below
/// [`MIN_REAL_STEP`]) on a clock fast enough that this is the shorter, and at most [`MAX_POLL`].
fn next_step(due: TimeDelta, scale: f64) -> Duration {
    let scale = scale.max(1e-6);
    let real = |d: TimeDelta| d.to_std().unwrap_or_default().div_f64(scale);
    let min = real(MIN_STEP_SIM).clamp(MIN_REAL_STEP, MIN_POLL);
    real(due).clamp(min, MAX_POLL.max(min))
}

/// Holds a simulated network's clock where the campaign's next step is due, `next` (real
/// time) from now (`None`: it will not step again), so a step that a loaded machine makes late
/// does not let the devices' time run on without the engine: answers and retries keep the
/// timing they would have on a real network (see [`crate::network::Network::hold_clock_at`];
/// nothing on a real network). The campaign is known to the network by its random McAddr.
/// Returns the time held at.
pub fn hold_clock(io: Io<'_>, run: &Run, next: Option<Duration>) -> Option<DateTime<Utc>> {
    let scale = io.network.time_scale().max(0.0);
    let at = next.map(|n| {
        let ahead = TimeDelta::from_std(n.mul_f64(scale)).unwrap_or(TimeDelta::MAX);
        io.network
            .now()
            .checked_add_signed(ahead)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    });
    io.network
        .hold_clock_at(u64::from(u32::from_be_bytes(run.mc_addr)), at);
    at
}

async fn create_group(
    io: Io<'_>,
    run: &mut Run,
    s: &Settings,
    group: &GroupInfo,
    members: &[DevEui],
    now: DateTime<Utc>,
    log: &mut Vec<LogLine>,
) {
    let (mc_app_s_key, mc_nwk_s_key) = run.session_keys();
    let spec = MulticastGroup {
        name: group.name.clone(),
        application_id: group.application_id.clone(),
        mc_addr: run.mc_addr,
        mc_nwk_s_key,
        mc_app_s_key,
        f_cnt: 0,
        class: s.class,
        dr: s.dr,
        frequency: s.frequency,
    };
    // Made by an earlier attempt whose owner died before storing its id: used, not made twice.
    let found = match io
        .network
        .find_multicast_group(&spec.name, spec.application_id.as_deref())
        .await
    {
        Ok(found) => found,
        Err(e) => {
            log.push(line(
                now,
                Level::Warning,
                None,
                format!("could not look for the campaign's multicast group (trying again): {e}"),
            ));
            return;
        }
    };
    if let Some(id) = &found {
        log.push(line(
            now,
            Level::Info,
            None,
            format!("multicast group {id} of an earlier attempt found on the network: used again"),
        ));
    }
    let made = match found {
        Some(id) => Ok(id),
        None => io.network.create_multicast_group(&spec).await,
    };
    let id = match made {
        Ok(id) => id,
        Err(e) => {
            log.push(line(
                now,
                Level::Warning,
                None,
                format!("could not create the multicast group (trying again): {e}"),
            ));
            return;
        }
    };
    let added = io.network.add_multicast_devices(&id, members).await;
    for (&m, result) in members.iter().zip(added) {
        if let Err(e) = result {
            log.push(line(
                now,
                Level::Warning,
                Some(m),
                format!("could not add the device to the multicast group: {e}"),
            ));
        }
    }
    bind_gateways(io, &id, &group.gateways, now, log).await;
    log.push(line(
        now,
        Level::Info,
        None,
        format!(
            "multicast group {id} created with {} devices",
            members.len()
        ),
    ));
    run.group = Some(id);
}

/// Sends one command to the campaign's multicast group (adaptive parity's status requests).
async fn multicast(
    io: Io<'_>,
    run: &Run,
    f_port: u8,
    data: &[u8],
    what: &str,
    now: DateTime<Utc>,
    log: &mut Vec<LogLine>,
) {
    let Some(group) = run.group.as_deref() else {
        return;
    };
    let (level, message) = match io.network.enqueue_multicast(group, f_port, data).await {
        Ok(_) => (Level::Info, format!("{what} sent")),
        Err(e) => (Level::Warning, format!("could not queue {what}: {e}")),
    };
    log.push(line(now, level, None, message));
}

/// Keeps up to [`WINDOW`] fragments queued, in order; notes when the network sent the last.
/// `fragments`: the frames and the FPort of the devices' fragmentation package.
async fn stream(
    io: Io<'_>,
    run: &mut Run,
    s: &Settings,
    fragments: (&[Vec<u8>], u8),
    now: DateTime<Utc>,
    log: &mut Vec<LogLine>,
) {
    let (frames, f_port) = fragments;
    let Some(group) = run.group.clone() else {
        return;
    };
    let queued = match io.network.multicast_queue_len(&group).await {
        Ok(n) => n,
        Err(e) => {
            log.push(line(
                now,
                Level::Warning,
                None,
                format!("multicast queue: {e}"),
            ));
            return;
        }
    };
    let ended = run.session_end(s).is_some_and(|end| now >= end);
    if ended && run.next_fragment < run.sendable(s, frames.len()) {
        log.push(line(
            now,
            Level::Warning,
            None,
            format!(
                "the session ended after {} of {} fragments; a longer session (timeout exponent) is needed for this image",
                run.next_fragment,
                frames.len()
            ),
        ));
        run.next_fragment = frames.len();
    }
    let sendable = run.sendable(s, frames.len());
    if run.next_fragment >= sendable {
        if queued == 0 {
            run.sent_all_sendable(s, now);
            if run.fragments_sent_at == Some(now) {
                log.push(line(
                    now,
                    Level::Info,
                    None,
                    format!("all {} fragments sent", run.next_fragment),
                ));
            }
        }
        return;
    }
    let room = WINDOW.saturating_sub(queued);
    let allowed = sendable - run.next_fragment;
    for frame in frames
        .iter()
        .skip(run.next_fragment)
        .take(room.min(allowed))
    {
        if let Err(e) = io.network.enqueue_multicast(&group, f_port, frame).await {
            log.push(line(
                now,
                Level::Warning,
                None,
                format!("could not queue fragment {}: {e}", run.next_fragment + 1),
            ));
            return;
        }
        run.next_fragment += 1;
    }
}

#[cfg(test)]
mod tests {
    use lorafleet_engine::packages::{DevicePackages, PackagesPatch, VersionedPatch};

    use super::*;

    fn dev(n: u8, fragmentation: Option<(u8, u8)>) -> Dev {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let mut d = Dev::new(DevEui([n; 8]), [0; 16], None, &settings_for_tests(), now);
        d.packages = fragmentation.map(|(version, f_port)| DevicePackages {
            packages: Packages::defaults(111).with(&PackagesPatch {
                fragmentation: Some(VersionedPatch {
                    version: Some(version),
                    f_port: Some(f_port),
                }),
                ..Default::default()
            }),
            limits: Default::default(),
            frag_v2: None,
        });
        d
    }

    fn settings_for_tests() -> Settings {
        let frag = lorafleet_engine::commands::FragSetup::for_image(100, 10, 0, 0, 1, 0, [0; 4])
            .unwrap_or_else(|e| panic!("{e}"));
        Settings {
            group_id: 0,
            class: lorafleet_engine::MulticastClass::C,
            dr: 5,
            frequency: 869_525_000,
            timeout_exp: 6,
            unicast_timeout: TimeDelta::seconds(60),
            attempts: 3,
            frag,
            redundancy: 5,
            frag_status: lorafleet_engine::machine::FragStatusWhen::Never,
            check: lorafleet_engine::machine::CheckMode::Off,
            verify: false,
            reboot_delay: TimeDelta::zero(),
            status_port: 111,
            check_method: Method::Auto,
            verify_method: Method::Auto,
            fm_port: 203,
            reboot_with: lorafleet_engine::machine::RebootWith::RebootTime,
            adaptive: None,
        }
    }

    /// A real network's clock steps between 50 and 250 ms; an accelerated one as often as its
    /// time needs, down to every 5 simulated seconds (not 50 at time_scale 1000), but never
    /// closer than the 20 ms that leave the simulator's clock time to run.
    #[test]
    fn steps_are_paced_in_the_networks_time() {
        let ms = |due: TimeDelta, scale: f64| next_step(due, scale).as_secs_f64() * 1e3;
        let near = |got: f64, want: f64| assert!((got - want).abs() < 1e-3, "{got} ms, not {want}");
        near(ms(TimeDelta::seconds(1), 1.0), 250.0);
        near(ms(TimeDelta::milliseconds(10), 1.0), 50.0);
        near(ms(TimeDelta::seconds(1), 1000.0), 20.0);
        near(ms(TimeDelta::seconds(10), 1000.0), 20.0);
        near(ms(TimeDelta::seconds(30), 1000.0), 30.0);
        near(ms(TimeDelta::seconds(1), 400.0), 20.0);
        near(ms(TimeDelta::seconds(10), 400.0), 25.0);
        near(ms(TimeDelta::seconds(60), 10.0), 250.0);
        near(ms(TimeDelta::milliseconds(100), 10.0), 50.0);
    }

    /// Without a session given, the most common TS004 version and FPort carries it; a device
    /// speaking another is refused with what it speaks, and a device without packages counts
    /// for nothing.
    #[test]
    fn one_session_takes_the_devices_common_fragmentation() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let mut devs = vec![
            dev(1, Some((2, 51))),
            dev(2, Some((1, 201))),
            dev(3, Some((2, 51))),
            dev(4, None),
        ];
        let mut log = Vec::new();
        one_fragmentation_session(&mut devs, None, now, &mut log);
        assert_eq!(
            session_fragmentation(&devs),
            Versioned {
                version: 2,
                f_port: 51
            }
        );
        assert_eq!(devs[1].outcome, Some(Outcome::Refused));
        assert_eq!(
            devs[1].error.as_deref(),
            Some("it speaks TS004 v1 on FPort 201, its wave's multicast session TS004 v2 on FPort 51 (its device profile changed since the campaign started?); update it in a campaign of its own")
        );
        assert!(
            devs[0].outcome.is_none() && devs[2].outcome.is_none() && devs[3].outcome.is_none()
        );
        assert_eq!(log.len(), 1);
        assert_eq!(
            session_fragmentation(&[dev(5, None)]),
            Packages::defaults(0).fragmentation
        );
    }

    /// The wave's session decides, however few of its devices still speak it: the others
    /// changed since the start grouped them.
    #[test]
    fn the_waves_session_wins_over_the_majority() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let mut devs = vec![
            dev(1, Some((2, 51))),
            dev(2, Some((1, 201))),
            dev(3, Some((2, 51))),
        ];
        let wave = Session {
            fragmentation: Versioned {
                version: 1,
                f_port: 201,
            },
        };
        let mut log = Vec::new();
        one_fragmentation_session(&mut devs, Some(wave), now, &mut log);
        let refused: Vec<bool> = devs
            .iter()
            .map(|d| d.outcome == Some(Outcome::Refused))
            .collect();
        assert_eq!(refused, [true, false, true]);
        assert_eq!(session_fragmentation(&devs), wave.fragmentation);
        assert_eq!(log.len(), 2);
    }
}
