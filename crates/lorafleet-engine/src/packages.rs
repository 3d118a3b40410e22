//! Which version of each LoRa Alliance package a device speaks and on which FPort, and what
//! the device can hold: resolved once per device when a campaign starts, then used for every
//! command sent to it and every answer read from it.
//!
//! ChirpStack v4 sets the versions and FPorts per device profile (`app_layer_params`), device
//! stacks differ (TS003/TS004/TS005 v1 or v2), so nothing here is fixed per campaign. The
//! layers, later ones winning field by field: the packages' defaults ([`Packages::defaults`]),
//! the device profile, the campaign's `packages`, the device's own override ([`PackagesPatch`]).
//!
//! v1 commands are the ones in [`crate::commands`]; v2 commands go through `lrwn`'s v2 codecs.
//! An answer is read by the package its FPort belongs to for that device, in that device's
//! version.

use lrwn::applayer::fragmentation::v2 as ts004v2;
use lrwn::applayer::multicastsetup::v2 as ts005v2;
use lrwn::DevAddr;
use serde::{Deserialize, Serialize};

use crate::commands::{self, FragSetup, MulticastClass, Reply, SessionReq};
use crate::ports;

/// A package with a version and an FPort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    /// 1 (v1.0.0) or 2 (v2.0.0).
    pub version: u8,
    pub f_port: u8,
}

/// TS003 clock sync: `enabled` says whether lorafleet answers the device's AppTimeReq.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockSync {
    pub version: u8,
    pub f_port: u8,
    pub enabled: bool,
}

/// A package known by its FPort only (Version & Status has one version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortOnly {
    pub f_port: u8,
}

/// Every package a FUOTA campaign speaks to one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packages {
    pub clock_sync: ClockSync,
    pub multicast_setup: Versioned,
    pub fragmentation: Versioned,
    pub firmware_management: Versioned,
    pub version_status: PortOnly,
}

impl Packages {
    /// The specifications' default FPorts, v1 throughout; Version & Status on `status_port`
    /// (lorafleet's configuration).
    pub fn defaults(status_port: u8) -> Packages {
        Packages {
            clock_sync: ClockSync {
                version: 1,
                f_port: ports::CLOCK_SYNC,
                enabled: true,
            },
            multicast_setup: Versioned {
                version: 1,
                f_port: ports::MULTICAST_SETUP,
            },
            fragmentation: Versioned {
                version: 1,
                f_port: ports::FRAGMENTATION,
            },
            firmware_management: Versioned {
                version: 1,
                f_port: ports::FIRMWARE_MANAGEMENT,
            },
            version_status: PortOnly {
                f_port: status_port,
            },
        }
    }

    /// These packages with every field the patch sets replaced.
    pub fn with(mut self, p: &PackagesPatch) -> Packages {
        if let Some(c) = &p.clock_sync {
            set(&mut self.clock_sync.version, c.version);
            set(&mut self.clock_sync.f_port, c.f_port);
            set(&mut self.clock_sync.enabled, c.enabled);
        }
        for (to, from) in [
            (&mut self.multicast_setup, &p.multicast_setup),
            (&mut self.fragmentation, &p.fragmentation),
            (&mut self.firmware_management, &p.firmware_management),
        ] {
            if let Some(from) = from {
                set(&mut to.version, from.version);
                set(&mut to.f_port, from.f_port);
            }
        }
        if let Some(v) = &p.version_status {
            set(&mut self.version_status.f_port, v.f_port);
        }
        self
    }

    /// What the device speaks, in words for the campaign log.
    pub fn describe(&self) -> String {
        let c = self.clock_sync;
        format!(
            "TS005 v{} on FPort {}, TS004 v{} on FPort {}, TS003 v{} on FPort {}{}, Version & Status on FPort {}",
            self.multicast_setup.version,
            self.multicast_setup.f_port,
            self.fragmentation.version,
            self.fragmentation.f_port,
            c.version,
            c.f_port,
            if c.enabled { "" } else { " (not answered by lorafleet)" },
            self.version_status.f_port
        )
    }

    /// The FPorts the engine reads answers on.
    pub fn answer_ports(&self) -> [u8; 4] {
        [
            self.multicast_setup.f_port,
            self.fragmentation.f_port,
            self.firmware_management.f_port,
            self.version_status.f_port,
        ]
    }
}

/// One device's packages from its layers, lowest first (device profile, campaign, device
/// override) over the defaults. When the network server answers the device's clock sync
/// itself (a ChirpStack profile with TS003), lorafleet's stays off whatever the layers say:
/// two answers to one AppTimeReq would set the device's clock twice.
pub fn resolve(
    status_port: u8,
    layers: &[&PackagesPatch],
    network_answers_clock_sync: bool,
) -> Packages {
    let mut p = layers
        .iter()
        .fold(Packages::defaults(status_port), |p, l| p.with(l));
    if network_answers_clock_sync {
        p.clock_sync.enabled = false;
    }
    p
}

fn set<T: Copy>(to: &mut T, from: Option<T>) {
    if let Some(v) = from {
        *to = v;
    }
}

/// A versioned package as far as a layer says anything about it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionedPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f_port: Option<u8>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockSyncPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f_port: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f_port: Option<u8>,
}

/// What one layer (a device profile, a campaign, a device override) says about the packages;
/// absent fields leave the layer below.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackagesPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_sync: Option<ClockSyncPatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multicast_setup: Option<VersionedPatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fragmentation: Option<VersionedPatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_management: Option<VersionedPatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_status: Option<PortPatch>,
}

impl PackagesPatch {
    pub fn is_empty(&self) -> bool {
        *self == PackagesPatch::default()
    }
}

/// What a device can hold of a fragmentation session (its decoder's build-time limits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceLimits {
    /// Largest FragSize, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fragment_size: Option<u32>,
    /// Largest NbFrag (data fragments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fragments: Option<u32>,
    /// Most parity fragments (lost data fragments) its decoder can work with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parity: Option<u32>,
}

impl DeviceLimits {
    /// These limits, with the fields they leave open taken from `below`.
    pub fn over(self, below: DeviceLimits) -> DeviceLimits {
        DeviceLimits {
            max_fragment_size: self.max_fragment_size.or(below.max_fragment_size),
            max_fragments: self.max_fragments.or(below.max_fragments),
            max_parity: self.max_parity.or(below.max_parity),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == DeviceLimits::default()
    }

    /// Each limit a session of `nb_frag` fragments of `frag_size` bytes with `parity` parity
    /// fragments exceeds, in words naming the limit.
    pub fn exceeded(&self, frag_size: u32, nb_frag: u32, parity: u32) -> Vec<String> {
        let checks = [
            (
                "max_fragment_size",
                self.max_fragment_size,
                frag_size,
                "bytes per fragment",
            ),
            (
                "max_fragments",
                self.max_fragments,
                nb_frag,
                "data fragments",
            ),
            ("max_parity", self.max_parity, parity, "parity fragments"),
        ];
        checks
            .into_iter()
            .filter_map(|(name, limit, value, what)| {
                let limit = limit?;
                (value > limit).then(|| format!("{value} {what} exceed its {name} of {limit}"))
            })
            .collect()
    }

    /// The limits in words (`max_fragment_size 50, max_fragments 21`), or None when none is known.
    pub fn describe(&self) -> Option<String> {
        let parts: Vec<String> = [
            ("max_fragment_size", self.max_fragment_size),
            ("max_fragments", self.max_fragments),
            ("max_parity", self.max_parity),
        ]
        .into_iter()
        .filter_map(|(n, v)| v.map(|v| format!("{n} {v}")))
        .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

/// What one device speaks and holds, fixed when the campaign starts (stored with the device's
/// engine state, so a restart keeps talking to it the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevicePackages {
    pub packages: Packages,
    #[serde(default)]
    pub limits: DeviceLimits,
    /// TS004 v2: the session counter and the data block's MIC for FragSessionSetupReq.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frag_v2: Option<FragV2>,
}

/// The two fields TS004 v2 adds to FragSessionSetupReq.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FragV2 {
    /// Devices refuse a SessionCnt not above the last one they saw for the FragIndex.
    pub session_cnt: u16,
    /// `hex` of the 4-byte MIC over the (unpadded) image.
    #[serde(with = "hex_mic")]
    pub mic: [u8; 4],
}

mod hex_mic {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(k: &[u8; 4], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(k))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 4], D::Error> {
        let s = String::deserialize(d)?;
        let mut k = [0u8; 4];
        hex::decode_to_slice(s, &mut k).map_err(serde::de::Error::custom)?;
        Ok(k)
    }
}

/// The TS004 v2 MIC of a data block: key from the device's root key (GenAppKey for LoRaWAN
/// 1.0.x, AppKey for 1.1, as ChirpStack does), over the image without its padding.
pub fn frag_v2(
    root: [u8; 16],
    session_cnt: u16,
    frag_index: u8,
    descriptor: [u8; 4],
    image: &[u8],
) -> Result<FragV2, String> {
    let key = ts004v2::get_data_block_int_key(lrwn::AES128Key::from_bytes(root))
        .map_err(|e| format!("DataBlockIntKey: {e}"))?;
    let mic = ts004v2::calculate_mic(key, session_cnt, frag_index, descriptor, image)
        .map_err(|e| format!("TS004 v2 MIC: {e}"))?;
    Ok(FragV2 { session_cnt, mic })
}

fn unsupported(package: &str, version: u8) -> String {
    format!("{package} version {version} is not supported (1 or 2)")
}

/// McGroupSetupReq in the device's TS005 version.
pub fn mc_group_setup_req(
    version: u8,
    group_id: u8,
    mc_addr: [u8; 4],
    mc_key_encrypted: [u8; 16],
    max_f_cnt: u32,
) -> Result<Vec<u8>, String> {
    match version {
        1 => commands::mc_group_setup_req(group_id, mc_addr, mc_key_encrypted, 0, max_f_cnt),
        2 => ts005v2::Payload::McGroupSetupReq(ts005v2::McGroupSetupReqPayload {
            mc_group_id_header: ts005v2::McGroupSetupReqPayloadMcGroupIdHeader {
                mc_group_id: group_id,
            },
            mc_addr: DevAddr::from_be_bytes(mc_addr),
            mc_key_encrypted,
            min_mc_f_count: 0,
            max_mc_f_count: max_f_cnt,
        })
        .to_vec()
        .map_err(|e| format!("McGroupSetupReq (TS005 v2): {e}")),
        v => Err(unsupported("TS005", v)),
    }
}

/// McClassCSessionReq / McClassBSessionReq in the device's TS005 version.
pub fn mc_session_req(version: u8, s: &SessionReq) -> Result<Vec<u8>, String> {
    let payload = match (version, s.class) {
        (1, _) => return commands::mc_session_req(s),
        (2, MulticastClass::C) => {
            ts005v2::Payload::McClassCSessionReq(ts005v2::McClassCSessionReqPayload {
                mc_group_id_header: ts005v2::McClassCSessionReqPayloadMcGroupIdHeader {
                    mc_group_id: s.group_id,
                },
                session_time: s.session_time,
                session_time_out: ts005v2::McClassCSessionReqPayloadSessionTimeOut {
                    time_out: s.timeout_exp,
                },
                dl_frequ: s.frequency,
                dr: s.dr,
            })
        }
        (
            2,
            MulticastClass::B {
                ping_slot_periodicity,
            },
        ) => ts005v2::Payload::McClassBSessionReq(ts005v2::McClassBSessionReqPayload {
            mc_group_id_header: ts005v2::McClassBSessionReqPayloadMcGroupIdHeader {
                mc_group_id: s.group_id,
            },
            session_time: s.session_time,
            time_out_periodicity: ts005v2::McClassBSessionReqPayloadTimeOutPeriodicity {
                time_out: s.timeout_exp,
                periodicity: ping_slot_periodicity,
            },
            dl_frequ: s.frequency,
            dr: s.dr,
        }),
        (v, _) => return Err(unsupported("TS005", v)),
    };
    payload
        .to_vec()
        .map_err(|e| format!("multicast session request (TS005 v2): {e}"))
}

/// FragSessionSetupReq in the device's TS004 version; v2 carries `frag_v2` (its SessionCnt
/// and MIC) and the campaign's matrix as FragAlgo.
pub fn frag_session_setup_req(
    version: u8,
    s: &FragSetup,
    frag_v2: Option<FragV2>,
) -> Result<Vec<u8>, String> {
    match version {
        1 => commands::frag_session_setup_req(s),
        2 => {
            let v2 = frag_v2.ok_or("FragSessionSetupReq (TS004 v2) needs the data block's MIC")?;
            let mut mask = [false; 4];
            for (i, m) in mask.iter_mut().enumerate() {
                *m = s.group_mask & (1 << i) != 0;
            }
            ts004v2::Payload::FragSessionSetupReq(ts004v2::FragSessionSetupReqPayload {
                frag_session: ts004v2::FragSessionSetuReqPayloadFragSession {
                    mc_group_bit_mask: mask,
                    frag_index: s.index,
                },
                nb_frag: s.nb_frag,
                frag_size: s.frag_size,
                control: ts004v2::FragSessionSetuReqPayloadControl {
                    block_ack_delay: s.block_ack_delay,
                    frag_algo: s.matrix,
                    // lorafleet verifies by version, not by FragDataBlockReceivedReq.
                    ack_reception: false,
                },
                padding: s.padding,
                descriptor: s.descriptor,
                session_cnt: v2.session_cnt,
                mic: v2.mic,
            })
            .to_vec()
            .map_err(|e| format!("FragSessionSetupReq (TS004 v2): {e}"))
        }
        v => Err(unsupported("TS004", v)),
    }
}

/// FragSessionStatusReq in the device's TS004 version.
pub fn frag_session_status_req(
    version: u8,
    index: u8,
    participants: bool,
) -> Result<Vec<u8>, String> {
    match version {
        1 => commands::frag_session_status_req(index, participants),
        2 => ts004v2::Payload::FragSessionStatusReq(ts004v2::FragSessionStatusReqPayload {
            participants,
            frag_index: index,
        })
        .to_vec()
        .map_err(|e| format!("FragSessionStatusReq (TS004 v2): {e}")),
        v => Err(unsupported("TS004", v)),
    }
}

/// Every DataFragment frame of a session in the devices' TS004 version: v1 as
/// [`commands::data_fragments`]; v2 with lrwn's v2 encoder, whose parity rows hold exactly
/// M/2 distinct data fragments (a v1 device would rebuild a v2 parity fragment wrongly, and
/// the other way round).
pub fn data_fragments(
    version: u8,
    image: &[u8],
    setup: &FragSetup,
    redundancy: usize,
) -> Result<Vec<Vec<u8>>, String> {
    if version != 2 {
        return commands::data_fragments(image, setup, redundancy);
    }
    let (padded, size) = commands::padded_image(image, setup, redundancy)?;
    let rows = ts004v2::encode(&padded, size, redundancy).map_err(|e| format!("FEC: {e}"))?;
    rows.into_iter()
        .zip(1u16..)
        .map(|(data, n)| {
            ts004v2::Payload::DataFragment(ts004v2::DataFragmentPayload {
                index_and_n: ts004v2::DataFragmentPayloadIndexAndN {
                    n,
                    frag_index: setup.index,
                },
                data,
            })
            .to_vec()
            .map_err(|e| format!("DataFragment: {e}"))
        })
        .collect()
}

/// Decodes an uplink from a device that speaks `p`. v1 answers are read by
/// [`commands::parse_uplink`] as if they came on the package's default FPort; v2 answers by
/// lrwn's v2 codecs. An FPort that is none of the device's packages gives nothing.
pub fn parse_uplink(f_port: u8, data: &[u8], p: &Packages) -> Vec<Reply> {
    let status_port = p.version_status.f_port;
    if f_port == status_port {
        return commands::parse_uplink(status_port, data, status_port);
    }
    let default_port = if f_port == p.multicast_setup.f_port {
        if p.multicast_setup.version == 2 {
            return vec![parse_ts005_v2(data)];
        }
        ports::MULTICAST_SETUP
    } else if f_port == p.fragmentation.f_port {
        if p.fragmentation.version == 2 {
            return vec![parse_ts004_v2(data)];
        }
        ports::FRAGMENTATION
    } else if f_port == p.firmware_management.f_port {
        ports::FIRMWARE_MANAGEMENT
    } else {
        return Vec::new();
    };
    // The default port must not be mistaken for the status port by the v1 parser.
    let status_port = if status_port == default_port {
        0
    } else {
        status_port
    };
    commands::parse_uplink(default_port, data, status_port)
}

fn parse_ts005_v2(data: &[u8]) -> Reply {
    let session = |what: &str, group_id, dr, freq, undefined, missed, time_to_start| {
        let result = commands::words(&[
            (dr, "data rate not supported"),
            (freq, "frequency not supported"),
            (
                undefined,
                "multicast group undefined (the device no longer has the McGroupSetup)",
            ),
            (
                missed,
                "the session start was missed (it was already past on arrival)",
            ),
        ])
        .map(|()| time_to_start)
        .map_err(|e| format!("{what}: {e}"));
        Reply::McSession { group_id, result }
    };
    match ts005v2::Payload::from_slice(true, data) {
        Ok(ts005v2::Payload::McGroupSetupAns(a)) => Reply::McGroupSetup {
            group_id: a.mc_group_id_header.mc_group_id,
            result: commands::words(&[(
                a.mc_group_id_header.id_error,
                "McGroupSetupAns: the device does not support this multicast group id",
            )]),
        },
        Ok(ts005v2::Payload::McClassCSessionAns(a)) => {
            let s = a.status_and_mc_group_id;
            session(
                "McClassCSessionAns",
                s.mc_group_id,
                s.dr_error,
                s.freq_error,
                s.mc_group_undefined,
                s.start_missed,
                a.time_to_start.unwrap_or(0),
            )
        }
        Ok(ts005v2::Payload::McClassBSessionAns(a)) => {
            let s = a.status_and_mc_group_id;
            session(
                "McClassBSessionAns",
                s.mc_group_id,
                s.dr_error,
                s.freq_error,
                s.mc_group_undefined,
                s.start_missed,
                a.time_to_start.unwrap_or(0),
            )
        }
        Ok(other) => Reply::Other(format!("{other:?}")),
        // LoRa Basics Modem answers a missed start with the status byte alone, which lrwn
        // wants followed by TimeToStart: read it as what it says.
        Err(_) if data.len() == 2 && matches!(data[0], 0x04 | 0x05) && data[1] & 0x20 != 0 => {
            let what = if data[0] == 0x04 {
                "McClassCSessionAns"
            } else {
                "McClassBSessionAns"
            };
            let b = data[1];
            session(
                what,
                b & 0x03,
                b & 0x04 != 0,
                b & 0x08 != 0,
                b & 0x10 != 0,
                true,
                0,
            )
        }
        Err(e) => Reply::Other(format!("TS005 v2 answer {}: {e}", hex::encode(data))),
    }
}

fn parse_ts004_v2(data: &[u8]) -> Reply {
    match ts004v2::Payload::from_slice(true, data) {
        Ok(ts004v2::Payload::FragSessionSetupAns(a)) => Reply::FragSessionSetup {
            index: a.frag_index,
            result: commands::words(&[
                (
                    a.frag_algo_unsupported,
                    "fragmentation algorithm not supported",
                ),
                (a.not_enough_memory, commands::NOT_ENOUGH_MEMORY),
                (
                    a.frag_index_unsupported,
                    "fragmentation session index not supported",
                ),
                (a.wrong_descriptor, "wrong descriptor"),
                (
                    a.session_cnt_replay,
                    "SessionCnt replay (the device saw this session counter or a later one)",
                ),
            ])
            .map_err(|e| format!("FragSessionSetupAns: {e}")),
        },
        Ok(ts004v2::Payload::FragSessionStatusAns(a)) => Reply::FragStatus {
            index: a.received_and_index.frag_index,
            received: a.received_and_index.nb_frag_received,
            missing: a.missing_frag,
            not_enough_memory: a.status.memory_error,
        },
        Ok(other) => Reply::Other(format!("{other:?}")),
        Err(e) => Reply::Other(format!("TS004 v2 answer {}: {e}", hex::encode(data))),
    }
}

/// A FragSessionSetupAns refusal in words that name the device's limits, when it said
/// "not enough memory": what the session asked for against what the device holds.
pub fn explain_refusal(
    error: String,
    s: &FragSetup,
    parity: usize,
    limits: &DeviceLimits,
) -> String {
    if !error.contains(commands::NOT_ENOUGH_MEMORY) {
        return error;
    }
    let asked = format!(
        "the session has {} fragments of {} bytes and {parity} parity fragments",
        s.nb_frag, s.frag_size
    );
    let exceeded = limits.exceeded(
        u32::from(s.frag_size),
        u32::from(s.nb_frag),
        u32::try_from(parity).unwrap_or(u32::MAX),
    );
    match (exceeded.is_empty(), limits.describe()) {
        (false, _) => format!("{error}: {asked}; {}", exceeded.join(", ")),
        (true, Some(known)) => format!(
            "{error}: {asked}, within its device_limits ({known}); the device holds less than they say"
        ),
        (true, None) => format!(
            "{error}: {asked}; set device_limits (max_fragment_size, max_fragments, max_parity) for this device so the plan fits it"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_everywhere() -> Packages {
        let v2 = VersionedPatch {
            version: Some(2),
            f_port: None,
        };
        Packages::defaults(111).with(&PackagesPatch {
            multicast_setup: Some(v2),
            fragmentation: Some(v2),
            ..Default::default()
        })
    }

    #[test]
    fn the_network_answering_clock_sync_silences_lorafleet() {
        let on = PackagesPatch {
            clock_sync: Some(ClockSyncPatch {
                enabled: Some(true),
                f_port: Some(9),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(resolve(111, &[&on], false).clock_sync.enabled);
        let p = resolve(111, &[&PackagesPatch::default(), &on], true);
        assert!(!p.clock_sync.enabled);
        assert_eq!(p.clock_sync.f_port, 9);
    }

    #[test]
    fn layers_override_field_by_field() {
        let profile = PackagesPatch {
            fragmentation: Some(VersionedPatch {
                version: Some(2),
                f_port: Some(210),
            }),
            clock_sync: Some(ClockSyncPatch {
                enabled: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        let device = PackagesPatch {
            fragmentation: Some(VersionedPatch {
                version: None,
                f_port: Some(211),
            }),
            version_status: Some(PortPatch { f_port: Some(112) }),
            ..Default::default()
        };
        let p = Packages::defaults(111).with(&profile).with(&device);
        assert_eq!(
            p.fragmentation,
            Versioned {
                version: 2,
                f_port: 211
            }
        );
        assert_eq!(p.multicast_setup.f_port, 200);
        assert!(!p.clock_sync.enabled);
        assert_eq!(p.clock_sync.f_port, 202);
        assert_eq!(p.answer_ports(), [200, 211, 203, 112]);
        assert_eq!(
            p.describe(),
            "TS005 v1 on FPort 200, TS004 v2 on FPort 211, TS003 v1 on FPort 202 (not answered by lorafleet), Version & Status on FPort 112"
        );
        let json = serde_json::to_value(device).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"fragmentation": {"f_port": 211}, "version_status": {"f_port": 112}})
        );
    }

    /// TS004 v2.0.0 FragSessionSetupReq: 16 bytes, FragAlgo in control bits 5:3, SessionCnt
    /// and MIC after the descriptor (the layout of the specification's §5.2 table).
    #[test]
    fn frag_session_setup_v2_bytes() {
        let f = FragSetup::for_image(1000, 50, 1, 0, 1, 0, [1, 2, 3, 4]).unwrap();
        let v2 = FragV2 {
            session_cnt: 0x0102,
            mic: [0xaa, 0xbb, 0xcc, 0xdd],
        };
        // FragSession 0x11 (index 1, group 0), NbFrag 20, FragSize 50, Control 01 (delay 1,
        // algo 0), padding 0, descriptor, SessionCnt LE, MIC.
        assert_eq!(
            hex::encode(frag_session_setup_req(2, &f, Some(v2)).unwrap()),
            "021114003201000102030402 01aabbccdd".replace(' ', "")
        );
        let algo = FragSetup { matrix: 1, ..f };
        assert_eq!(
            frag_session_setup_req(2, &algo, Some(v2)).unwrap()[5],
            0x09,
            "FragAlgo 1 in bits 5:3"
        );
        assert_eq!(
            hex::encode(frag_session_setup_req(1, &f, None).unwrap()),
            "0211140032010001020304",
            "v1 stays 10 bytes"
        );
        assert!(frag_session_setup_req(2, &f, None).is_err());
        assert!(frag_session_setup_req(3, &f, Some(v2))
            .unwrap_err()
            .contains("version 3"));
    }

    /// The MIC as LoRa Basics Modem checks it: CMAC over B0 (49, SessionCnt, FragIndex,
    /// Descriptor, 4 zero bytes, size) and the unpadded block, key aes(AppKey, 30 00..).
    #[test]
    fn frag_v2_mic_matches_the_definition() {
        use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};
        let root = [0x11u8; 16];
        let image: Vec<u8> = (0..=99).collect();
        let got = frag_v2(root, 7, 2, [9, 8, 7, 6], &image).unwrap();
        let mut k = GenericArray::from([0u8; 16]);
        k[0] = 0x30;
        aes::Aes128::new(&GenericArray::from(root)).encrypt_block(&mut k);
        let mut b0 = vec![0x49, 7, 0, 2, 9, 8, 7, 6, 0, 0, 0, 0];
        b0.extend_from_slice(&100u32.to_le_bytes());
        b0.extend_from_slice(&image);
        let cmac = cmac_aes128(k.into(), &b0);
        assert_eq!(got.mic, cmac[..4]);
        assert_eq!(got.session_cnt, 7);
    }

    /// AES-CMAC (RFC 4493) written out for the test, so the MIC is checked against the
    /// definition rather than against lrwn itself.
    fn cmac_aes128(key: [u8; 16], msg: &[u8]) -> [u8; 16] {
        use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};
        let aes = aes::Aes128::new(&GenericArray::from(key));
        let enc = |b: [u8; 16]| {
            let mut g = GenericArray::from(b);
            aes.encrypt_block(&mut g);
            <[u8; 16]>::from(g)
        };
        let dbl = |b: [u8; 16]| {
            let v = u128::from_be_bytes(b);
            let out = (v << 1) ^ if v >> 127 == 1 { 0x87 } else { 0 };
            out.to_be_bytes()
        };
        let k1 = dbl(enc([0; 16]));
        let k2 = dbl(k1);
        let n = msg.len().div_ceil(16).max(1);
        let mut x = [0u8; 16];
        for i in 0..n {
            let chunk = &msg[i * 16..msg.len().min(i * 16 + 16)];
            let mut block = [0u8; 16];
            block[..chunk.len()].copy_from_slice(chunk);
            if i == n - 1 {
                let sub = if chunk.len() == 16 {
                    k1
                } else {
                    block[chunk.len()] = 0x80;
                    k2
                };
                for j in 0..16 {
                    block[j] ^= sub[j];
                }
            }
            for j in 0..16 {
                x[j] ^= block[j];
            }
            x = enc(x);
        }
        x
    }

    /// TS005 v2 requests keep v1's layout (the conformance vector's McGroupSetupReq).
    #[test]
    fn ts005_v2_requests() {
        let req = mc_group_setup_req(
            2,
            0,
            [1, 2, 3, 4],
            hex::decode("15b6c1f8c91e71210588ef85ed1e6383")
                .unwrap()
                .try_into()
                .unwrap(),
            65535,
        )
        .unwrap();
        assert_eq!(
            hex::encode(req),
            "02000403020115b6c1f8c91e71210588ef85ed1e638300000000ffff0000"
        );
        let s = SessionReq {
            group_id: 0,
            session_time: 0x0102_0304,
            timeout_exp: 9,
            frequency: 869_525_000,
            dr: 5,
            class: MulticastClass::C,
        };
        assert_eq!(
            hex::encode(mc_session_req(2, &s).unwrap()),
            "04000403020109d2ad8405"
        );
        let b = SessionReq {
            class: MulticastClass::B {
                ping_slot_periodicity: 4,
            },
            ..s
        };
        assert_eq!(
            hex::encode(mc_session_req(2, &b).unwrap()),
            "05000403020149d2ad8405"
        );
        assert_eq!(
            frag_session_status_req(2, 1, true).unwrap(),
            vec![0x01, 0x03]
        );
    }

    #[test]
    fn v2_answers_on_the_devices_ports() {
        let mut p = v2_everywhere();
        p.fragmentation.f_port = 51;
        p.multicast_setup.f_port = 50;
        // v2 FragSessionStatusAns: status first (memory error), then received|index, missing.
        assert_eq!(
            parse_uplink(51, &[0x01, 0x01, 0x2b, 0x40, 0x08], &p),
            vec![Reply::FragStatus {
                index: 1,
                received: 43,
                missing: 8,
                not_enough_memory: true
            }]
        );
        assert_eq!(
            parse_uplink(51, &[0x02, 0x50], &p),
            vec![Reply::FragSessionSetup {
                index: 1,
                result: Err("FragSessionSetupAns: SessionCnt replay (the device saw this session counter or a later one)".into())
            }]
        );
        assert_eq!(
            parse_uplink(50, &[0x04, 0x00, 0x10, 0x00, 0x00], &p),
            vec![Reply::McSession {
                group_id: 0,
                result: Ok(16)
            }]
        );
        // LBM's start-missed answer: the status byte alone.
        assert_eq!(
            parse_uplink(50, &[0x04, 0x21], &p),
            vec![Reply::McSession {
                group_id: 1,
                result: Err("McClassCSessionAns: the session start was missed (it was already past on arrival)".into())
            }]
        );
        assert!(
            parse_uplink(201, &[0x02, 0x00], &p).is_empty(),
            "not its port"
        );
        assert!(matches!(
            parse_uplink(51, &[0x02], &p)[..],
            [Reply::Other(_)]
        ));
    }

    #[test]
    fn v1_answers_on_moved_ports_read_as_v1() {
        let mut p = Packages::defaults(111);
        p.fragmentation.f_port = 200;
        p.multicast_setup.f_port = 201;
        assert_eq!(
            parse_uplink(200, &[0x01, 0x05, 0x00, 0x07, 0x00], &p),
            // The answer's bytes as received (kept for the device row), then its reading.
            vec![
                Reply::FragStatusRaw(vec![0x01, 0x05, 0x00, 0x07, 0x00]),
                Reply::FragStatus {
                    index: 0,
                    received: 5,
                    missing: 7,
                    not_enough_memory: false
                }
            ]
        );
        assert_eq!(
            parse_uplink(201, &[0x02, 0x00], &p),
            vec![Reply::McGroupSetup {
                group_id: 0,
                result: Ok(())
            }]
        );
        assert_eq!(
            parse_uplink(111, &[0x01, 0x00, 0x00, 0x03, 0x01, 0x00], &p),
            vec![Reply::VersionRunning {
                version: 0x0001_0300
            }]
        );
    }

    /// v2 parity rows differ from v1's where v1 draws a data fragment twice; data fragments
    /// are the same bytes in both.
    #[test]
    fn v2_fragments_use_the_v2_matrix() {
        let image: Vec<u8> = (0..=255u8).cycle().take(64 * 10).collect();
        let f = FragSetup::for_image(image.len(), 10, 0, 0, 1, 0, [0; 4]).unwrap();
        let v1 = data_fragments(1, &image, &f, 20).unwrap();
        let v2 = data_fragments(2, &image, &f, 20).unwrap();
        assert_eq!(v1.len(), 84);
        assert_eq!(v2.len(), 84);
        assert_eq!(v1[..64], v2[..64]);
        assert_ne!(v1[64..], v2[64..], "some parity row differs");
        assert_eq!(
            &v2[64][..3],
            &[0x08, 65, 0],
            "N = 65 follows the 64 data fragments"
        );
    }

    proptest::proptest! {
        /// Whatever a device sends on any FPort, in either version, parsing never panics, and
        /// a frame on none of its FPorts gives nothing.
        #[test]
        fn any_answer_parses_without_panicking(
            data in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
            port in 1u8..=223,
            v2 in proptest::bool::ANY,
        ) {
            let p = if v2 { v2_everywhere() } else { Packages::defaults(111) };
            let replies = parse_uplink(port, &data, &p);
            if !p.answer_ports().contains(&port) {
                proptest::prop_assert!(replies.is_empty());
            }
        }
    }

    #[test]
    fn limits_in_words() {
        let limits = DeviceLimits {
            max_fragment_size: Some(50),
            max_fragments: Some(21),
            max_parity: Some(5),
        };
        assert_eq!(
            limits.exceeded(239, 21, 10),
            vec![
                "239 bytes per fragment exceed its max_fragment_size of 50".to_string(),
                "10 parity fragments exceed its max_parity of 5".to_string()
            ]
        );
        assert!(limits.exceeded(50, 21, 5).is_empty());
        let f = FragSetup::for_image(1000, 239, 0, 0, 1, 0, [0; 4]).unwrap();
        let e = explain_refusal(
            format!("FragSessionSetupAns: {}", commands::NOT_ENOUGH_MEMORY),
            &f,
            10,
            &limits,
        );
        assert_eq!(
            e,
            "FragSessionSetupAns: not enough memory for the image: the session has 5 fragments of 239 bytes and 10 parity fragments; 239 bytes per fragment exceed its max_fragment_size of 50, 10 parity fragments exceed its max_parity of 5"
        );
        let unknown = explain_refusal(
            format!("FragSessionSetupAns: {}", commands::NOT_ENOUGH_MEMORY),
            &f,
            10,
            &DeviceLimits::default(),
        );
        assert!(unknown.contains("set device_limits"), "{unknown}");
        assert_eq!(
            explain_refusal(
                "FragSessionSetupAns: wrong descriptor".into(),
                &f,
                10,
                &limits
            ),
            "FragSessionSetupAns: wrong descriptor"
        );
        let campaign = DeviceLimits {
            max_parity: Some(9),
            ..Default::default()
        };
        assert_eq!(campaign.over(limits).max_parity, Some(9));
        assert_eq!(campaign.over(limits).max_fragments, Some(21));
    }
}
