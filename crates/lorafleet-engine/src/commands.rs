//! The engine's side of the wire: the requests it sends (TS005, TS004, Version & Status) and
//! what a device's answer means, with every refusal put into words an operator can act on.

use lorafleet_codec::version_status::{self, Answer, HeapAvailable, Request};
use lrwn::applayer::fragmentation::v1 as ts004;
use lrwn::applayer::multicastsetup::v1 as ts005;
use lrwn::DevAddr;

use crate::ports;

/// How the members of a multicast group listen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MulticastClass {
    /// Continuously, during the session.
    C,
    /// In ping slots every 2^periodicity seconds.
    B { ping_slot_periodicity: u8 },
}

/// A multicast session as McClassCSessionReq / McClassBSessionReq describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionReq {
    pub group_id: u8,
    /// GPS seconds.
    pub session_time: u32,
    /// Class C: the session lasts 2^n s; class B: 2^n beacon periods.
    pub timeout_exp: u8,
    /// Hz.
    pub frequency: u32,
    pub dr: u8,
    pub class: MulticastClass,
}

/// McGroupSetupReq for one device; `mc_addr` most significant byte first.
pub fn mc_group_setup_req(
    group_id: u8,
    mc_addr: [u8; 4],
    mc_key_encrypted: [u8; 16],
    min_f_cnt: u32,
    max_f_cnt: u32,
) -> Result<Vec<u8>, String> {
    ts005::Payload::McGroupSetupReq(ts005::McGroupSetupReqPayload {
        mc_group_id_header: ts005::McGroupSetupReqPayloadMcGroupIdHeader {
            mc_group_id: group_id,
        },
        mc_addr: DevAddr::from_be_bytes(mc_addr),
        mc_key_encrypted,
        min_mc_f_count: min_f_cnt,
        max_mc_f_count: max_f_cnt,
    })
    .to_vec()
    .map_err(|e| format!("McGroupSetupReq: {e}"))
}

pub fn mc_session_req(s: &SessionReq) -> Result<Vec<u8>, String> {
    let payload = match s.class {
        MulticastClass::C => ts005::Payload::McClassCSessionReq(ts005::McClassCSessionReqPayload {
            mc_group_id_header: ts005::McClassCSessionReqPayloadMcGroupIdHeader {
                mc_group_id: s.group_id,
            },
            session_time: s.session_time,
            session_time_out: ts005::McClassCSessionReqPayloadSessionTimeOut {
                time_out: s.timeout_exp,
            },
            dl_frequ: s.frequency,
            dr: s.dr,
        }),
        MulticastClass::B {
            ping_slot_periodicity,
        } => ts005::Payload::McClassBSessionReq(ts005::McClassBSessionReqPayload {
            mc_group_id_header: ts005::McClassBSessionReqPayloadMcGroupIdHeader {
                mc_group_id: s.group_id,
            },
            session_time: s.session_time,
            time_out_periodicity: ts005::McClassBSessionReqPayloadTimeOutPeriodicity {
                time_out: s.timeout_exp,
                periodicity: ping_slot_periodicity,
            },
            dl_frequ: s.frequency,
            dr: s.dr,
        }),
    };
    payload
        .to_vec()
        .map_err(|e| format!("multicast session request: {e}"))
}

/// A fragmentation session as FragSessionSetupReq describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragSetup {
    pub index: u8,
    /// Bit i: the session is bound to multicast group i.
    pub group_mask: u8,
    pub nb_frag: u16,
    pub frag_size: u8,
    pub padding: u8,
    pub block_ack_delay: u8,
    pub matrix: u8,
    pub descriptor: [u8; 4],
}

impl FragSetup {
    /// The session for `image`: fragment count and padding as the sender cuts it.
    pub fn for_image(
        image_len: usize,
        frag_size: u8,
        index: u8,
        group_id: u8,
        block_ack_delay: u8,
        matrix: u8,
        descriptor: [u8; 4],
    ) -> Result<FragSetup, String> {
        let size = usize::from(frag_size);
        if size == 0 || image_len == 0 {
            return Err("the image and the fragment size must not be empty".into());
        }
        let nb = image_len.div_ceil(size);
        let nb_frag = u16::try_from(nb)
            .ok()
            .filter(|&n| u32::from(n) <= lorafleet_codec::fragmentation::MAX_N)
            .ok_or_else(|| format!("{nb} fragments do not fit TS004's 14-bit fragment number"))?;
        Ok(FragSetup {
            index,
            group_mask: 1 << (group_id & 3),
            nb_frag,
            frag_size,
            // Less than one fragment, so it fits a byte.
            padding: (nb * size - image_len) as u8,
            block_ack_delay,
            matrix,
            descriptor,
        })
    }
}

pub fn frag_session_setup_req(s: &FragSetup) -> Result<Vec<u8>, String> {
    let mut mask = [false; 4];
    for (i, m) in mask.iter_mut().enumerate() {
        *m = s.group_mask & (1 << i) != 0;
    }
    ts004::Payload::FragSessionSetupReq(ts004::FragSessionSetupReqPayload {
        frag_session: ts004::FragSessionSetuReqPayloadFragSession {
            mc_group_bit_mask: mask,
            frag_index: s.index,
        },
        nb_frag: s.nb_frag,
        frag_size: s.frag_size,
        control: ts004::FragSessionSetuReqPayloadControl {
            block_ack_delay: s.block_ack_delay,
            fragmentation_matrix: s.matrix,
        },
        padding: s.padding,
        descriptor: s.descriptor,
    })
    .to_vec()
    .map_err(|e| format!("FragSessionSetupReq: {e}"))
}

/// FragSessionStatusReq; `participants` asks every device to answer, not only those still
/// missing fragments.
pub fn frag_session_status_req(index: u8, participants: bool) -> Result<Vec<u8>, String> {
    ts004::Payload::FragSessionStatusReq(ts004::FragSessionStatusReqPayload {
        participants,
        frag_index: index,
    })
    .to_vec()
    .map_err(|e| format!("FragSessionStatusReq: {e}"))
}

/// Every DataFragment frame of a session, in sending order: the uncoded fragments in increasing
/// N first (devices drop a fragment whose N is below one already received), then the parity
/// fragments from lrwn's encoder.
pub fn data_fragments(
    image: &[u8],
    setup: &FragSetup,
    redundancy: usize,
) -> Result<Vec<Vec<u8>>, String> {
    let (padded, size) = padded_image(image, setup, redundancy)?;
    let rows = ts004::encode(&padded, size, redundancy).map_err(|e| format!("FEC: {e}"))?;
    rows.into_iter()
        .enumerate()
        .map(|(i, data)| {
            ts004::Payload::DataFragment(ts004::DataFragmentPayload {
                index_and_n: ts004::DataFragmentPayloadIndexAndN {
                    // padded_image checked the total against the 14-bit limit.
                    n: (i + 1) as u16,
                    frag_index: setup.index,
                },
                data,
            })
            .to_vec()
            .map_err(|e| format!("DataFragment: {e}"))
        })
        .collect()
}

/// The image padded to whole fragments, and the fragment size; an error when its fragments and
/// `redundancy` parity fragments would not fit TS004's 14-bit fragment number (both versions).
pub(crate) fn padded_image(
    image: &[u8],
    setup: &FragSetup,
    redundancy: usize,
) -> Result<(Vec<u8>, usize), String> {
    let size = usize::from(setup.frag_size);
    let mut padded = image.to_vec();
    padded.resize(usize::from(setup.nb_frag) * size, 0);
    let total = usize::from(setup.nb_frag) + redundancy;
    if total > lorafleet_codec::fragmentation::MAX_N as usize {
        return Err(format!(
            "{} data and {redundancy} parity fragments exceed TS004's 14-bit fragment number",
            setup.nb_frag
        ));
    }
    Ok((padded, size))
}

/// Version & Status questions asked before a campaign: the package version (whose versioning
/// type says how to read versions), running version and space. Requests without arguments are
/// their command id alone, so nothing here can fail to encode.
pub fn check_req() -> Vec<u8> {
    [
        Request::PackageVersion,
        Request::VersionRunning,
        Request::SpaceStatus,
    ]
    .iter()
    .map(Request::cid)
    .collect()
}

pub fn version_running_req() -> Vec<u8> {
    vec![Request::VersionRunning.cid()]
}

/// What a device said, as far as the engine cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    McGroupSetup {
        group_id: u8,
        result: Result<(), String>,
    },
    McSession {
        group_id: u8,
        /// Seconds until the session starts, by the device's clock.
        result: Result<u32, String>,
    },
    FragSessionSetup {
        index: u8,
        result: Result<(), String>,
    },
    FragStatus {
        index: u8,
        received: u16,
        missing: u8,
        not_enough_memory: bool,
    },
    VersionRunning {
        version: u32,
    },
    SpaceStatus {
        slot_size: u32,
        heap: Option<u32>,
    },
    /// PackageVersionAns of Version & Status: how the device numbers its versions.
    VersioningType {
        nibble: u8,
    },
    /// FragSessionStatusAns exactly as received (CID included), ahead of its [`Reply::FragStatus`]:
    /// the engine keeps the bytes and reads them in the device's stack's reading.
    FragStatusRaw(Vec<u8>),
    /// A Firmware Management (TS006) answer.
    FirmwareManagement(lorafleet_codec::firmware_management::Answer),
    /// Anything else on the engine's ports (package versions, delete answers, ...).
    Other(String),
}

/// How FragSessionSetupAns' "not enough memory" bit reads; the engine adds the device's
/// limits to it (`packages::explain_refusal`).
pub const NOT_ENOUGH_MEMORY: &str = "not enough memory for the image";

/// The reasons whose bit is set, joined; `Ok` when none is.
pub(crate) fn words(reasons: &[(bool, &str)]) -> Result<(), String> {
    let set: Vec<&str> = reasons
        .iter()
        .filter(|(b, _)| *b)
        .map(|(_, s)| *s)
        .collect();
    if set.is_empty() {
        Ok(())
    } else {
        Err(set.join(", "))
    }
}

/// Decodes an uplink on one of the engine's ports into replies; malformed payloads become
/// `Other` with the decoder's message (radio reality, not a reason to stop).
pub fn parse_uplink(f_port: u8, data: &[u8], status_port: u8) -> Vec<Reply> {
    if f_port == status_port {
        let (answers, error) = version_status::decode_answers(data);
        let mut out: Vec<Reply> = answers
            .into_iter()
            .map(|a| match a {
                Answer::VersionRunning { version, .. } => Reply::VersionRunning { version },
                Answer::SpaceStatus {
                    heap_available,
                    slot_size,
                } => Reply::SpaceStatus {
                    slot_size,
                    heap: match heap_available {
                        HeapAvailable::Bytes(b) => Some(b),
                        HeapAvailable::Unknown => None,
                    },
                },
                Answer::PackageVersion {
                    versioning_type, ..
                } => Reply::VersioningType {
                    nibble: versioning_type.to_nibble(),
                },
                other => Reply::Other(other.command_name().to_string()),
            })
            .collect();
        if let Some(e) = error {
            out.push(Reply::Other(format!("Version & Status: {e}")));
        }
        return out;
    }
    let reply = match f_port {
        ports::MULTICAST_SETUP => match ts005::Payload::from_slice(true, data) {
            Ok(ts005::Payload::McGroupSetupAns(a)) => Reply::McGroupSetup {
                group_id: a.mc_group_id_header.mc_group_id,
                result: words(&[(
                    a.mc_group_id_header.id_error,
                    "McGroupSetupAns: the device does not support this multicast group id",
                )]),
            },
            Ok(ts005::Payload::McClassCSessionAns(a)) => {
                let s = a.status_and_mc_group_id;
                Reply::McSession {
                    group_id: s.mc_group_id,
                    result: session_result(
                        "McClassCSessionAns",
                        s.dr_error,
                        s.freq_error,
                        s.mc_group_undefined,
                        a.time_to_start,
                    ),
                }
            }
            Ok(ts005::Payload::McClassBSessionAns(a)) => {
                let s = a.status_and_mc_group_id;
                Reply::McSession {
                    group_id: s.mc_group_id,
                    result: session_result(
                        "McClassBSessionAns",
                        s.dr_error,
                        s.freq_error,
                        s.mc_group_undefined,
                        a.time_to_start,
                    ),
                }
            }
            Ok(other) => Reply::Other(format!("{other:?}")),
            Err(e) => Reply::Other(format!("TS005 answer {}: {e}", hex::encode(data))),
        },
        ports::FRAGMENTATION => match ts004::Payload::from_slice(true, data) {
            Ok(ts004::Payload::FragSessionSetupAns(a)) => Reply::FragSessionSetup {
                index: a.frag_index,
                result: words(&[
                    (
                        a.encoding_unsupported,
                        "fragmentation matrix (encoding) not supported",
                    ),
                    (a.not_enough_memory, NOT_ENOUGH_MEMORY),
                    (
                        a.frag_session_index_not_supported,
                        "fragmentation session index not supported",
                    ),
                    (a.wrong_descriptor, "wrong descriptor"),
                ])
                .map_err(|e| format!("FragSessionSetupAns: {e}")),
            },
            Ok(ts004::Payload::FragSessionStatusAns(a)) => Reply::FragStatus {
                index: a.received_and_index.frag_index,
                received: a.received_and_index.nb_frag_received,
                missing: a.missing_frag,
                not_enough_memory: a.status.not_enough_matrix_memory,
            },
            Ok(other) => Reply::Other(format!("{other:?}")),
            Err(e) => Reply::Other(format!("TS004 answer {}: {e}", hex::encode(data))),
        },
        _ => return Vec::new(),
    };
    if matches!(reply, Reply::FragStatus { .. }) {
        return vec![Reply::FragStatusRaw(data.to_vec()), reply];
    }
    vec![reply]
}

fn session_result(
    what: &str,
    dr_error: bool,
    freq_error: bool,
    undefined: bool,
    time_to_start: Option<u32>,
) -> Result<u32, String> {
    words(&[
        (dr_error, "data rate not supported"),
        (freq_error, "frequency not supported"),
        (
            undefined,
            "multicast group undefined (the device no longer has the McGroupSetup)",
        ),
    ])
    .map_err(|e| format!("{what}: {e}"))?;
    Ok(time_to_start.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_request_bytes() {
        let s = SessionReq {
            group_id: 0,
            session_time: 0x0102_0304,
            timeout_exp: 9,
            frequency: 869_525_000,
            dr: 5,
            class: MulticastClass::C,
        };
        // CID 04, group 0, time LE, timeout 9, 869.525 MHz / 100 = 8695250 = 0x84ADD2 LE, DR 5.
        assert_eq!(
            hex::encode(mc_session_req(&s).unwrap()),
            "04000403020109d2ad8405"
        );
        let f = FragSetup::for_image(1000, 50, 0, 0, 1, 0, [1, 2, 3, 4]).unwrap();
        assert_eq!((f.nb_frag, f.padding), (20, 0));
        // CID 02, index 0 | group 0 mask, 20 frags, size 50, control 01, padding 0, descriptor.
        assert_eq!(
            hex::encode(frag_session_setup_req(&f).unwrap()),
            "0201140032010001020304"
        );
        assert_eq!(frag_session_status_req(0, true).unwrap(), vec![0x01, 0x01]);
        assert_eq!(version_running_req(), vec![0x01]);
        assert_eq!(check_req(), vec![0x00, 0x01, 0x03]);
    }

    /// The TS005 conformance vector for LoRaWAN 1.0.x: the McGroupSetupReq as sent.
    #[test]
    fn mc_group_setup_conformance_vector() {
        let gen = crate::keys::parse_key("0302030405060708090a0b0c0d0e0f10").unwrap();
        let mc_key = crate::keys::parse_key("0102030405060708090a0b0c0d0e0f10").unwrap();
        let encrypted = crate::keys::encrypted_mc_key(crate::keys::RootKey::GenAppKey(gen), mc_key);
        let req = mc_group_setup_req(0, [1, 2, 3, 4], encrypted, 0, 65535).unwrap();
        assert_eq!(
            hex::encode(req),
            "02000403020115b6c1f8c91e71210588ef85ed1e638300000000ffff0000"
        );
    }

    #[test]
    fn group_id_must_fit_two_bits() {
        assert!(mc_group_setup_req(4, [0; 4], [0; 16], 0, 1).is_err());
    }

    #[test]
    fn fragments_go_uncoded_first_in_increasing_n_then_parity() {
        let image: Vec<u8> = (0..95u8).collect();
        let f = FragSetup::for_image(image.len(), 10, 1, 0, 0, 0, [0; 4]).unwrap();
        assert_eq!((f.nb_frag, f.padding), (10, 5));
        let frames = data_fragments(&image, &f, 3).unwrap();
        assert_eq!(frames.len(), 13);
        for (i, frame) in frames.iter().enumerate() {
            assert_eq!(frame[0], 0x08);
            let index_and_n = u16::from_le_bytes([frame[1], frame[2]]);
            assert_eq!(index_and_n & 0x3fff, i as u16 + 1);
            assert_eq!(index_and_n >> 14, 1, "session index 1");
            assert_eq!(frame.len(), 3 + 10);
        }
        assert_eq!(&frames[0][3..], &image[..10]);
        assert_eq!(&frames[9][3..8], &image[90..95]);
        assert_eq!(&frames[9][8..], &[0; 5]);
    }

    #[test]
    fn refusals_in_words() {
        let r = parse_uplink(201, &[0x02, 0x02], 111);
        assert_eq!(
            r,
            vec![Reply::FragSessionSetup {
                index: 0,
                result: Err("FragSessionSetupAns: not enough memory for the image".into())
            }]
        );
        let r = parse_uplink(200, &[0x04, 0x08], 111);
        assert_eq!(
            r,
            vec![Reply::McSession {
                group_id: 0,
                result: Err("McClassCSessionAns: frequency not supported".into())
            }]
        );
        let r = parse_uplink(200, &[0x04, 0x00, 0x10, 0x00, 0x00], 111);
        assert_eq!(
            r,
            vec![Reply::McSession {
                group_id: 0,
                result: Ok(16)
            }]
        );
        assert_eq!(
            parse_uplink(200, &[0x02, 0x00], 111),
            vec![Reply::McGroupSetup {
                group_id: 0,
                result: Ok(())
            }]
        );
        let r = parse_uplink(201, &[0x01, 0x05, 0x00, 0x07, 0x00], 111);
        assert_eq!(
            r,
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
        let r = parse_uplink(111, &[0x01, 0x00, 0x00, 0x03, 0x01, 0x00], 111);
        assert_eq!(
            r,
            vec![Reply::VersionRunning {
                version: 0x0001_0300
            }]
        );
        assert!(matches!(
            parse_uplink(200, &[0x09], 111)[..],
            [Reply::Other(_)]
        ));
        assert!(parse_uplink(1, &[0x09], 111).is_empty());
    }
}
