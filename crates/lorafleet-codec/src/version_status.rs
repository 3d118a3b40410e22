//! LoRaWAN Version & Status application package, version 1.
//!
//! PackageIdentifier 10, unicast only, default FPort 111. Every frame starts
//! with a one-byte CID; multi-byte integers are little-endian. Requests go down
//! to the device, answers come back up on the same port.
//!
//! The decoders here face radio reality: unknown CIDs, truncated frames and
//! string lengths that overrun the frame are reported as [`enum@Error`]s, never as
//! panics, and [`decode_answers`] keeps everything it decoded before the first
//! malformed answer.

use thiserror::Error;

use crate::time;

/// PackageIdentifier of the Version & Status package.
pub const PACKAGE_IDENTIFIER: u8 = 10;
/// Version of the package specification implemented here.
pub const PACKAGE_VERSION: u8 = 1;
/// FPort the specification (and the known device implementation) uses by default.
pub const DEFAULT_F_PORT: u8 = 111;

/// Command identifiers, shared by a request and its answer.
pub mod cid {
    /// PackageVersionReq / PackageVersionAns.
    pub const PACKAGE_VERSION: u8 = 0x00;
    /// VersionRunningReq / VersionRunningAns.
    pub const VERSION_RUNNING: u8 = 0x01;
    /// VersionStoredReq / VersionStoredAns.
    pub const VERSION_STORED: u8 = 0x02;
    /// SpaceStatusReq / SpaceStatusAns.
    pub const SPACE_STATUS: u8 = 0x03;
    /// UptimeReq / UptimeAns.
    pub const UPTIME: u8 = 0x04;
    /// EraseSlotReq (there is no answer).
    pub const ERASE_SLOT: u8 = 0x05;
    /// DeviceDescriptionReq / DeviceDescriptionAns.
    pub const DEVICE_DESCRIPTION: u8 = 0x06;
}

/// Slots assumed when a device reports 0 slots (the specification's default).
pub const DEFAULT_NB_SLOTS: u8 = 3;

/// Largest value a 4-bit field can carry.
const NIBBLE_MAX: u8 = 0x0f;

/// DescriptionFlags bit asking for / announcing the manufacturer id string.
const FLAG_MANUFACTURER_ID: u8 = 0b10;
/// DescriptionFlags bit asking for / announcing the device id string.
const FLAG_DEVICE_ID: u8 = 0b01;

/// Why a Version & Status frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Error {
    /// The frame has no bytes at all, so not even a CID.
    #[error("empty payload: expected a command identifier")]
    Empty,
    /// The CID is not defined by the package (in this direction).
    #[error("unknown command identifier 0x{cid:02x}")]
    UnknownCid {
        /// The offending CID.
        cid: u8,
    },
    /// The frame ends before the command's fixed fields do.
    #[error("{command} too short: needs {needed} byte(s) after the CID, got {got}")]
    TooShort {
        /// Command being decoded, e.g. `"VersionRunningAns"`.
        command: &'static str,
        /// Bytes the command needs after its CID.
        needed: usize,
        /// Bytes actually left after the CID.
        got: usize,
    },
    /// A length-prefixed string claims more bytes than the frame has left.
    #[error("{command}: {field} length {len} overflows the payload ({available} byte(s) left)")]
    StringOverflow {
        /// Command being decoded.
        command: &'static str,
        /// Which string, e.g. `"manufacturer_id"`.
        field: &'static str,
        /// Length announced by the length byte.
        len: usize,
        /// Bytes remaining after the length byte.
        available: usize,
    },
    /// A string is too long for its one-byte length prefix.
    #[error("{field} is {len} bytes; a one-byte length holds at most 255")]
    StringTooLong {
        /// Which string.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// A value does not fit the bits the frame gives it.
    #[error("{field} = {value} is out of range ({min}..={max})")]
    FieldOutOfRange {
        /// Field name, e.g. `"nb_slots"`.
        field: &'static str,
        /// The rejected value.
        value: u32,
        /// Smallest allowed value.
        min: u32,
        /// Largest allowed value.
        max: u32,
    },
    /// A single-command decode found bytes after the command.
    #[error("{command}: {extra} unexpected trailing byte(s)")]
    TrailingBytes {
        /// Command that was decoded.
        command: &'static str,
        /// Number of bytes left over.
        extra: usize,
    },
    /// A VersionStored answer's slot list disagrees with its flags byte.
    #[error("VersionStoredAns slots do not match flags 0x{flags:02x}: {reason}")]
    SlotsMismatch {
        /// The flags byte.
        flags: u8,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Splits off the first `N` bytes of a command body, or reports which command was cut short.
fn take<'a, const N: usize>(
    body: &'a [u8],
    command: &'static str,
) -> Result<([u8; N], &'a [u8]), Error> {
    let too_short = Error::TooShort {
        command,
        needed: N,
        got: body.len(),
    };
    let (head, rest) = body.split_at_checked(N).ok_or(too_short.clone())?;
    let head: [u8; N] = head.try_into().map_err(|_| too_short)?;
    Ok((head, rest))
}

fn u32_le(b: [u8; 4]) -> u32 {
    u32::from_le_bytes(b)
}

/// Checks a value destined for a 4-bit field; values are rejected, never masked,
/// so a caller bug cannot silently address a different slot.
fn nibble(field: &'static str, value: u8) -> Result<u8, Error> {
    if value > NIBBLE_MAX {
        return Err(Error::FieldOutOfRange {
            field,
            value: value.into(),
            min: 0,
            max: NIBBLE_MAX.into(),
        });
    }
    Ok(value)
}

/// A request from the server to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Request {
    /// Ask which package version the device implements.
    PackageVersion,
    /// Ask for the running slot and version.
    VersionRunning,
    /// Ask for the versions stored in the first `nb_slots` slots (0..=15; 0 lets the device answer 3).
    VersionStored {
        /// Number of slots the answer should describe.
        nb_slots: u8,
    },
    /// Ask for free heap and slot size.
    SpaceStatus,
    /// Ask for the seconds since the last restart.
    Uptime,
    /// Ask the device to erase a slot (0..=15). The device does not answer.
    EraseSlot {
        /// Slot to erase.
        slot: u8,
    },
    /// Ask for identification strings.
    DeviceDescription {
        /// Request the manufacturer id string.
        manufacturer_id: bool,
        /// Request the device id string.
        device_id: bool,
    },
}

impl Request {
    /// The CID this request is sent with.
    pub fn cid(&self) -> u8 {
        match self {
            Request::PackageVersion => cid::PACKAGE_VERSION,
            Request::VersionRunning => cid::VERSION_RUNNING,
            Request::VersionStored { .. } => cid::VERSION_STORED,
            Request::SpaceStatus => cid::SPACE_STATUS,
            Request::Uptime => cid::UPTIME,
            Request::EraseSlot { .. } => cid::ERASE_SLOT,
            Request::DeviceDescription { .. } => cid::DEVICE_DESCRIPTION,
        }
    }

    /// Stable snake_case name for logs and metrics.
    pub fn command_name(&self) -> &'static str {
        match self {
            Request::PackageVersion => "package_version",
            Request::VersionRunning => "version_running",
            Request::VersionStored { .. } => "version_stored",
            Request::SpaceStatus => "space_status",
            Request::Uptime => "uptime",
            Request::EraseSlot { .. } => "erase_slot",
            Request::DeviceDescription { .. } => "device_description",
        }
    }

    /// Encodes the request as a downlink payload.
    ///
    /// `nb_slots` and `slot` must fit the low nibble; larger values are an error.
    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        let mut out = vec![self.cid()];
        match *self {
            Request::PackageVersion
            | Request::VersionRunning
            | Request::SpaceStatus
            | Request::Uptime => {}
            Request::VersionStored { nb_slots } => out.push(nibble("nb_slots", nb_slots)?),
            Request::EraseSlot { slot } => out.push(nibble("slot", slot)?),
            Request::DeviceDescription {
                manufacturer_id,
                device_id,
            } => {
                let mut flags = 0;
                if manufacturer_id {
                    flags |= FLAG_MANUFACTURER_ID;
                }
                if device_id {
                    flags |= FLAG_DEVICE_ID;
                }
                out.push(flags);
            }
        }
        Ok(out)
    }

    /// Decodes exactly one request (device side); trailing bytes are an error.
    ///
    /// RFU bits (the high nibble of the parameter byte, and bits 2..=7 of
    /// DeviceDescriptionReq) are ignored, as devices do.
    pub fn from_slice(b: &[u8]) -> Result<Request, Error> {
        let (req, used) = decode_request(b)?;
        let extra = b.len().saturating_sub(used);
        if extra > 0 {
            return Err(Error::TrailingBytes {
                command: req.command_name(),
                extra,
            });
        }
        Ok(req)
    }
}

/// Decodes one request from the front of `b`, returning it and the bytes it used.
fn decode_request(b: &[u8]) -> Result<(Request, usize), Error> {
    let (&cid, body) = b.split_first().ok_or(Error::Empty)?;
    let param = |command| take::<1>(body, command).map(|([p], _)| p);
    let req = match cid {
        cid::PACKAGE_VERSION => return Ok((Request::PackageVersion, 1)),
        cid::VERSION_RUNNING => return Ok((Request::VersionRunning, 1)),
        cid::SPACE_STATUS => return Ok((Request::SpaceStatus, 1)),
        cid::UPTIME => return Ok((Request::Uptime, 1)),
        cid::VERSION_STORED => Request::VersionStored {
            nb_slots: param("VersionStoredReq")? & NIBBLE_MAX,
        },
        cid::ERASE_SLOT => Request::EraseSlot {
            slot: param("EraseSlotReq")? & NIBBLE_MAX,
        },
        cid::DEVICE_DESCRIPTION => {
            let flags = param("DeviceDescriptionReq")?;
            Request::DeviceDescription {
                manufacturer_id: flags & FLAG_MANUFACTURER_ID != 0,
                device_id: flags & FLAG_DEVICE_ID != 0,
            }
        }
        other => return Err(Error::UnknownCid { cid: other }),
    };
    Ok((req, 2))
}

/// Decodes requests back to back (a simulated device's view of a downlink);
/// stops at the first malformed one, keeping those decoded before it.
pub fn decode_requests(payload: &[u8]) -> (Vec<Request>, Option<Error>) {
    let mut out = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        match decode_request(rest) {
            Ok((req, used)) => {
                out.push(req);
                rest = rest.get(used..).unwrap_or_default();
            }
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

/// How a device encodes its firmware version numbers (the high nibble of VersionInfo).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VersioningType {
    /// 0: the device does not report a versioning scheme.
    NotSupported,
    /// 1: RFU / Major / Minor / Patch, one byte each.
    MajorMinorPatch,
    /// 2: seconds since the GPS epoch (1980-01-06T00:00:00Z).
    GpsSeconds,
    /// 3..=15: reserved for future use; the raw nibble is kept.
    Rfu(u8),
}

impl VersioningType {
    /// Interprets a 4-bit versioning type. Values above 15 cannot come off the
    /// air (callers pass a nibble) and are kept as `Rfu` unchanged.
    pub fn from_nibble(n: u8) -> VersioningType {
        match n {
            0 => VersioningType::NotSupported,
            1 => VersioningType::MajorMinorPatch,
            2 => VersioningType::GpsSeconds,
            other => VersioningType::Rfu(other),
        }
    }

    /// The 4-bit code. `Rfu(v)` returns `v` as is; encoders validate it.
    pub fn to_nibble(self) -> u8 {
        match self {
            VersioningType::NotSupported => 0,
            VersioningType::MajorMinorPatch => 1,
            VersioningType::GpsSeconds => 2,
            VersioningType::Rfu(v) => v,
        }
    }
}

/// A stored firmware image reported by VersionStoredAns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StoredSlot {
    /// Slot number (0..=7, the bit position in the flags byte).
    pub slot: u8,
    /// Raw version; render it with the device's [`VersioningType`].
    pub version: u32,
}

/// Free heap reported by SpaceStatusAns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeapAvailable {
    /// 0 on the air: the device could not read it.
    Unknown,
    /// Bytes available. 1 on the air means "minimum" and is read as `Bytes(0)`.
    Bytes(u32),
}

/// An answer from a device.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Answer {
    /// PackageVersionAns.
    PackageVersion {
        /// Should be [`PACKAGE_IDENTIFIER`].
        package_identifier: u8,
        /// Should be [`PACKAGE_VERSION`].
        package_version: u8,
        /// How the device's version numbers are encoded.
        versioning_type: VersioningType,
        /// Firmware slots (1..=15); 0 on the air is already resolved to 3.
        nb_slots: u8,
    },
    /// VersionRunningAns.
    VersionRunning {
        /// Slot the running image came from (low nibble of StatusInfo).
        running_slot: u8,
        /// Raw running version.
        version: u32,
    },
    /// VersionStoredAns.
    VersionStored {
        /// Bit `i` set: slot `i` holds a runnable image.
        flags: u8,
        /// Versions of the flagged slots only, in slot order.
        slots: Vec<StoredSlot>,
    },
    /// SpaceStatusAns.
    SpaceStatus {
        /// Free heap.
        heap_available: HeapAvailable,
        /// Size of one firmware slot in bytes.
        slot_size: u32,
    },
    /// UptimeAns.
    Uptime {
        /// Seconds since the last restart.
        seconds: u32,
    },
    /// DeviceDescriptionAns.
    ///
    /// Strings are decoded lossily: bytes that are not UTF-8 become U+FFFD, because
    /// the specification only says `char[]` and an odd identifier must not cost
    /// the rest of the uplink.
    DeviceDescription {
        /// Manufacturer id, present when its flag was set.
        manufacturer_id: Option<String>,
        /// Device id, present when its flag was set.
        device_id: Option<String>,
    },
}

/// Which VersionStoredAns layout [`Answer::encode`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoredLayout {
    /// The specification: one version per flagged slot (1 + 4 x popcount(flags) bytes).
    Spec,
    /// The known Mbed device: `nb_slots` versions, 0 for unflagged slots
    /// (1 + 4 x nb_slots bytes).
    Device {
        /// Number of versions written.
        nb_slots: u8,
    },
}

impl Answer {
    /// The CID this answer is sent with.
    pub fn cid(&self) -> u8 {
        match self {
            Answer::PackageVersion { .. } => cid::PACKAGE_VERSION,
            Answer::VersionRunning { .. } => cid::VERSION_RUNNING,
            Answer::VersionStored { .. } => cid::VERSION_STORED,
            Answer::SpaceStatus { .. } => cid::SPACE_STATUS,
            Answer::Uptime { .. } => cid::UPTIME,
            Answer::DeviceDescription { .. } => cid::DEVICE_DESCRIPTION,
        }
    }

    /// Stable snake_case name, matching [`Request::command_name`] of the request answered.
    pub fn command_name(&self) -> &'static str {
        match self {
            Answer::PackageVersion { .. } => "package_version",
            Answer::VersionRunning { .. } => "version_running",
            Answer::VersionStored { .. } => "version_stored",
            Answer::SpaceStatus { .. } => "space_status",
            Answer::Uptime { .. } => "uptime",
            Answer::DeviceDescription { .. } => "device_description",
        }
    }

    /// Encodes the answer as a device would, with the specification's VersionStoredAns layout.
    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        self.encode(StoredLayout::Spec)
    }

    /// Encodes the answer with the Mbed device's VersionStoredAns layout
    /// (`nb_slots` versions, 0 for unflagged slots). Other answers encode as in [`Answer::to_vec`].
    pub fn to_vec_device_layout(&self, nb_slots: u8) -> Result<Vec<u8>, Error> {
        self.encode(StoredLayout::Device { nb_slots })
    }

    /// Encodes the answer with the given VersionStoredAns layout.
    pub fn encode(&self, layout: StoredLayout) -> Result<Vec<u8>, Error> {
        let mut out = vec![self.cid()];
        match self {
            Answer::PackageVersion {
                package_identifier,
                package_version,
                versioning_type,
                nb_slots,
            } => {
                let packed = pack_versioning_and_slots(*versioning_type, *nb_slots)?;
                out.extend([*package_identifier, *package_version, packed]);
            }
            Answer::VersionRunning {
                running_slot,
                version,
            } => {
                out.push(nibble("running_slot", *running_slot)?);
                out.extend(version.to_le_bytes());
            }
            Answer::VersionStored { flags, slots } => {
                check_slots(*flags, slots)?;
                out.push(*flags);
                out.extend(stored_versions_bytes(*flags, slots, layout)?);
            }
            Answer::SpaceStatus {
                heap_available,
                slot_size,
            } => {
                out.extend(heap_air_value(*heap_available).to_le_bytes());
                out.extend(slot_size.to_le_bytes());
            }
            Answer::Uptime { seconds } => out.extend(seconds.to_le_bytes()),
            Answer::DeviceDescription {
                manufacturer_id,
                device_id,
            } => out.extend(description_bytes(
                manufacturer_id.as_deref(),
                device_id.as_deref(),
            )?),
        }
        Ok(out)
    }

    /// Decodes exactly one answer; trailing bytes are an error.
    pub fn from_slice(b: &[u8]) -> Result<Answer, Error> {
        let (ans, used) = decode_answer(b)?;
        let extra = b.len().saturating_sub(used);
        if extra > 0 {
            return Err(Error::TrailingBytes {
                command: ans.command_name(),
                extra,
            });
        }
        Ok(ans)
    }
}

/// Number of slots needed to reach the highest flagged one (0 for no flags).
fn highest_flagged_slot_count(flags: u8) -> u8 {
    // At most 8, so the narrowing cannot lose anything.
    (u8::BITS - flags.leading_zeros()) as u8
}

/// Ensures the slot list names exactly the flagged slots, in ascending order,
/// because the spec layout carries versions positionally.
fn check_slots(flags: u8, slots: &[StoredSlot]) -> Result<(), Error> {
    let expected = (0..8u8).filter(|i| flags & (1 << i) != 0);
    if slots.len() != flags.count_ones() as usize {
        return Err(Error::SlotsMismatch {
            flags,
            reason: "one version per flagged slot is required",
        });
    }
    if !slots.iter().map(|s| s.slot).eq(expected) {
        return Err(Error::SlotsMismatch {
            flags,
            reason: "slots must be the flagged ones in ascending order",
        });
    }
    Ok(())
}

/// Decodes one answer from the front of `b`, returning it and the bytes it used.
fn decode_answer(b: &[u8]) -> Result<(Answer, usize), Error> {
    let (&cid, body) = b.split_first().ok_or(Error::Empty)?;
    let (answer, body_used) = match cid {
        cid::PACKAGE_VERSION => {
            let ([package_identifier, package_version, info], _) =
                take::<3>(body, "PackageVersionAns")?;
            let nb_slots = match info & NIBBLE_MAX {
                0 => DEFAULT_NB_SLOTS,
                n => n,
            };
            let ans = Answer::PackageVersion {
                package_identifier,
                package_version,
                versioning_type: VersioningType::from_nibble(info >> 4),
                nb_slots,
            };
            (ans, 3)
        }
        cid::VERSION_RUNNING => {
            let ([status, v0, v1, v2, v3], _) = take::<5>(body, "VersionRunningAns")?;
            let ans = Answer::VersionRunning {
                running_slot: status & NIBBLE_MAX,
                version: u32_le([v0, v1, v2, v3]),
            };
            (ans, 5)
        }
        cid::VERSION_STORED => decode_version_stored(body)?,
        cid::SPACE_STATUS => {
            let ([h0, h1, h2, h3, s0, s1, s2, s3], _) = take::<8>(body, "SpaceStatusAns")?;
            let heap_available = match u32_le([h0, h1, h2, h3]) {
                0 => HeapAvailable::Unknown,
                1 => HeapAvailable::Bytes(0),
                n => HeapAvailable::Bytes(n),
            };
            let ans = Answer::SpaceStatus {
                heap_available,
                slot_size: u32_le([s0, s1, s2, s3]),
            };
            (ans, 8)
        }
        cid::UPTIME => {
            let (secs, _) = take::<4>(body, "UptimeAns")?;
            (
                Answer::Uptime {
                    seconds: u32_le(secs),
                },
                4,
            )
        }
        cid::DEVICE_DESCRIPTION => decode_device_description(body)?,
        // EraseSlot has no answer, so 0x05 coming up is as unknown as 0x07.
        other => return Err(Error::UnknownCid { cid: other }),
    };
    Ok((answer, 1 + body_used))
}

/// Decodes a VersionStoredAns body, choosing between the two layouts by length.
///
/// With `p` = flagged slots, `h` = highest flagged slot + 1 and `rem` = bytes
/// after the flags byte:
/// 1. `rem == 4p`: specification layout, the whole rest is this answer.
/// 2. otherwise, `rem` a multiple of 4 with `h <= rem / 4 <= 15`: device layout
///    with `nb_slots = rem / 4`, consuming the rest; unflagged versions are dropped.
/// 3. otherwise, `rem > 4p`: specification layout, and the remaining bytes are
///    decoded as further answers.
/// 4. otherwise the answer is too short.
///
/// Rule 2 prefers the device layout whenever it fits because that is what the
/// only known implementation sends and a lone answer per uplink is the norm; the
/// price is that a spec-layout answer followed by other answers whose lengths
/// happen to make a multiple of 4 is read as one device-layout answer. A
/// device-layout answer followed by more answers cannot be recognised at all.
fn decode_version_stored(body: &[u8]) -> Result<(Answer, usize), Error> {
    const COMMAND: &str = "VersionStoredAns";
    let ([flags], rest) = take::<1>(body, COMMAND)?;
    let flagged = flags.count_ones() as usize;
    let rem = rest.len();
    let highest = usize::from(highest_flagged_slot_count(flags));
    let device_layout = rem != 4 * flagged
        && rem % 4 == 0
        && (highest..=usize::from(NIBBLE_MAX)).contains(&(rem / 4));
    let words = rest.chunks_exact(4).map(|w| {
        let mut b = [0u8; 4];
        b.copy_from_slice(w);
        u32::from_le_bytes(b)
    });
    let flagged_slots = (0..8u8).filter(|i| flags & (1 << i) != 0);
    let (slots, used): (Vec<StoredSlot>, usize) = if device_layout {
        let slots = words
            .zip(0u8..)
            .filter(|&(_, slot)| slot < 8 && flags & (1 << slot) != 0)
            .map(|(version, slot)| StoredSlot { slot, version })
            .collect();
        (slots, rem)
    } else {
        if rem < 4 * flagged {
            return Err(Error::TooShort {
                command: COMMAND,
                needed: 1 + 4 * flagged,
                got: body.len(),
            });
        }
        let slots = flagged_slots
            .zip(words)
            .map(|(slot, version)| StoredSlot { slot, version })
            .collect();
        (slots, 4 * flagged)
    };
    Ok((Answer::VersionStored { flags, slots }, 1 + used))
}

/// Decodes a DeviceDescriptionAns body: the echoed flags, then for each set
/// flag (manufacturer first) a length byte and that many bytes of text.
fn decode_device_description(body: &[u8]) -> Result<(Answer, usize), Error> {
    const COMMAND: &str = "DeviceDescriptionAns";
    let ([flags], mut rest) = take::<1>(body, COMMAND)?;
    let mut read = |wanted: bool, field: &'static str| -> Result<Option<String>, Error> {
        if !wanted {
            return Ok(None);
        }
        let (&len, after_len) = rest.split_first().ok_or(Error::TooShort {
            command: COMMAND,
            needed: body.len() - rest.len() + 1,
            got: body.len(),
        })?;
        let len = usize::from(len);
        let (text, after) = after_len
            .split_at_checked(len)
            .ok_or(Error::StringOverflow {
                command: COMMAND,
                field,
                len,
                available: after_len.len(),
            })?;
        rest = after;
        Ok(Some(String::from_utf8_lossy(text).into_owned()))
    };
    let manufacturer_id = read(flags & FLAG_MANUFACTURER_ID != 0, "manufacturer_id")?;
    let device_id = read(flags & FLAG_DEVICE_ID != 0, "device_id")?;
    let used = body.len() - rest.len();
    Ok((
        Answer::DeviceDescription {
            manufacturer_id,
            device_id,
        },
        used,
    ))
}

/// Decodes answers back to back until the payload is consumed.
///
/// Stops at the first malformed answer and returns the answers decoded before
/// it together with the error, so the caller can still record them. An empty
/// payload yields no answers and no error.
pub fn decode_answers(payload: &[u8]) -> (Vec<Answer>, Option<Error>) {
    let mut out = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        match decode_answer(rest) {
            Ok((ans, used)) => {
                out.push(ans);
                rest = rest.get(used..).unwrap_or_default();
            }
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

/// Renders a raw version for people, given the device's versioning type if known.
///
/// - MajorMinorPatch: `"major.minor.patch"`. The value is read as
///   `RFU << 24 | major << 16 | minor << 8 | patch`, i.e. the little-endian
///   bytes on the air are patch, minor, major, RFU; a non-zero RFU byte is not shown.
/// - GpsSeconds: RFC 3339 UTC, GPS epoch 1980-01-06T00:00:00Z, with the
///   leap seconds since 1980 removed (see [`time::gps_to_unix`]).
/// - Anything else (unknown, not supported, RFU): `"0x%08x raw"`, because the
///   bytes cannot be interpreted yet; keep the raw value and render it again
///   once PackageVersionAns arrives.
pub fn render_version(raw: u32, vt: Option<VersioningType>) -> String {
    match vt {
        Some(VersioningType::MajorMinorPatch) => {
            let [patch, minor, major, _rfu] = raw.to_le_bytes();
            format!("{major}.{minor}.{patch}")
        }
        Some(VersioningType::GpsSeconds) => time::rfc3339_from_unix(time::gps_to_unix(raw)),
        _ => format!("0x{raw:08x} raw"),
    }
}

/// PackageVersionAns's last byte: the versioning type in the high nibble, the slot count in the
/// low one. Values that would not decode back to themselves are refused.
fn pack_versioning_and_slots(versioning_type: VersioningType, nb_slots: u8) -> Result<u8, Error> {
    let vt = versioning_type.to_nibble();
    let vt_ok = match versioning_type {
        // An Rfu value that collides with a defined type would decode as that type.
        VersioningType::Rfu(v) => (3..=NIBBLE_MAX).contains(&v),
        _ => true,
    };
    if !vt_ok {
        return Err(Error::FieldOutOfRange {
            field: "versioning_type",
            value: vt.into(),
            min: 3,
            max: NIBBLE_MAX.into(),
        });
    }
    // 0 on the air means "3", so an explicit 0 could not round-trip.
    if !(1..=NIBBLE_MAX).contains(&nb_slots) {
        return Err(Error::FieldOutOfRange {
            field: "nb_slots",
            value: nb_slots.into(),
            min: 1,
            max: NIBBLE_MAX.into(),
        });
    }
    Ok(vt << 4 | nb_slots)
}

/// VersionStoredAns's versions after the flags byte, in the layout the reader expects: the
/// specification lists only the flagged slots, the Mbed device lists every slot (0 if unflagged).
fn stored_versions_bytes(
    flags: u8,
    slots: &[StoredSlot],
    layout: StoredLayout,
) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    match layout {
        StoredLayout::Spec => {
            for s in slots {
                out.extend(s.version.to_le_bytes());
            }
        }
        StoredLayout::Device { nb_slots } => {
            let nb_slots = nibble("nb_slots", nb_slots)?;
            let needed = highest_flagged_slot_count(flags);
            if nb_slots < needed {
                return Err(Error::FieldOutOfRange {
                    field: "nb_slots",
                    value: nb_slots.into(),
                    min: needed.into(),
                    max: NIBBLE_MAX.into(),
                });
            }
            for slot in 0..nb_slots {
                let v = slots
                    .iter()
                    .find(|s| s.slot == slot)
                    .map_or(0, |s| s.version);
                out.extend(v.to_le_bytes());
            }
        }
    }
    Ok(out)
}

/// SpaceStatusAns's heap field as sent on the air.
fn heap_air_value(heap_available: HeapAvailable) -> u32 {
    match heap_available {
        HeapAvailable::Unknown => 0,
        // The air value 1 stands for the minimum, which readers take as 0;
        // a true 1 cannot be expressed and degrades to the same.
        HeapAvailable::Bytes(0) => 1,
        HeapAvailable::Bytes(n) => n,
    }
}

/// DeviceDescriptionAns after the CID: a flags byte saying which strings follow, then each
/// present string with a one-byte length.
fn description_bytes(
    manufacturer_id: Option<&str>,
    device_id: Option<&str>,
) -> Result<Vec<u8>, Error> {
    let mut flags = 0;
    if manufacturer_id.is_some() {
        flags |= FLAG_MANUFACTURER_ID;
    }
    if device_id.is_some() {
        flags |= FLAG_DEVICE_ID;
    }
    let mut out = vec![flags];
    for (field, s) in [
        ("manufacturer_id", manufacturer_id),
        ("device_id", device_id),
    ] {
        if let Some(s) = s {
            let len = u8::try_from(s.len()).map_err(|_| Error::StringTooLong {
                field,
                len: s.len(),
            })?;
            out.push(len);
            out.extend_from_slice(s.as_bytes());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    #[test]
    fn request_table() {
        let table: Vec<(Request, &str)> = vec![
            (Request::PackageVersion, "00"),
            (Request::VersionRunning, "01"),
            (Request::VersionStored { nb_slots: 3 }, "02 03"),
            (Request::VersionStored { nb_slots: 0 }, "02 00"),
            (Request::VersionStored { nb_slots: 15 }, "02 0f"),
            (Request::SpaceStatus, "03"),
            (Request::Uptime, "04"),
            (Request::EraseSlot { slot: 2 }, "05 02"),
            (
                Request::DeviceDescription {
                    manufacturer_id: true,
                    device_id: true,
                },
                "06 03",
            ),
            (
                Request::DeviceDescription {
                    manufacturer_id: true,
                    device_id: false,
                },
                "06 02",
            ),
            (
                Request::DeviceDescription {
                    manufacturer_id: false,
                    device_id: true,
                },
                "06 01",
            ),
        ];
        for (req, bytes) in table {
            assert_eq!(req.to_vec().unwrap(), h(bytes), "{req:?}");
            assert_eq!(Request::from_slice(&h(bytes)).unwrap(), req, "{bytes}");
        }
    }

    #[test]
    fn request_names() {
        assert_eq!(Request::PackageVersion.command_name(), "package_version");
        assert_eq!(Request::VersionRunning.command_name(), "version_running");
        assert_eq!(
            Request::VersionStored { nb_slots: 1 }.command_name(),
            "version_stored"
        );
        assert_eq!(Request::SpaceStatus.command_name(), "space_status");
        assert_eq!(Request::Uptime.command_name(), "uptime");
        assert_eq!(Request::EraseSlot { slot: 1 }.command_name(), "erase_slot");
        assert_eq!(
            Request::DeviceDescription {
                manufacturer_id: false,
                device_id: false
            }
            .command_name(),
            "device_description"
        );
    }

    #[test]
    fn request_out_of_range_is_rejected_not_masked() {
        let err = Request::VersionStored { nb_slots: 16 }
            .to_vec()
            .unwrap_err();
        assert_eq!(
            err,
            Error::FieldOutOfRange {
                field: "nb_slots",
                value: 16,
                min: 0,
                max: 15
            }
        );
        assert!(Request::EraseSlot { slot: 0x10 }.to_vec().is_err());
        assert!(err.to_string().contains("nb_slots = 16 is out of range"));
    }

    #[test]
    fn request_decode_errors() {
        assert_eq!(Request::from_slice(&[]), Err(Error::Empty));
        assert_eq!(
            Request::from_slice(&[0x07]),
            Err(Error::UnknownCid { cid: 0x07 })
        );
        assert_eq!(
            Request::from_slice(&[0x02]),
            Err(Error::TooShort {
                command: "VersionStoredReq",
                needed: 1,
                got: 0
            })
        );
        assert_eq!(
            Request::from_slice(&[0x00, 0x00]),
            Err(Error::TrailingBytes {
                command: "package_version",
                extra: 1
            })
        );
        // RFU high nibble is ignored, like the device does.
        assert_eq!(
            Request::from_slice(&[0x02, 0x33]),
            Ok(Request::VersionStored { nb_slots: 3 })
        );
        let (reqs, err) = decode_requests(&h("00 01 02 03 09"));
        assert_eq!(
            reqs,
            vec![
                Request::PackageVersion,
                Request::VersionRunning,
                Request::VersionStored { nb_slots: 3 }
            ]
        );
        assert_eq!(err, Some(Error::UnknownCid { cid: 9 }));
    }

    fn answer_table() -> Vec<(Answer, &'static str)> {
        [
            package_version_answers(),
            version_answers(),
            space_and_uptime_answers(),
            description_answers(),
        ]
        .concat()
    }

    /// PackageVersionAns: each versioning type, and the slot count's extremes.
    fn package_version_answers() -> Vec<(Answer, &'static str)> {
        vec![
            (
                Answer::PackageVersion {
                    package_identifier: 10,
                    package_version: 1,
                    versioning_type: VersioningType::MajorMinorPatch,
                    nb_slots: 3,
                },
                "00 0a 01 13",
            ),
            (
                Answer::PackageVersion {
                    package_identifier: 10,
                    package_version: 1,
                    versioning_type: VersioningType::GpsSeconds,
                    nb_slots: 15,
                },
                "00 0a 01 2f",
            ),
            (
                Answer::PackageVersion {
                    package_identifier: 10,
                    package_version: 1,
                    versioning_type: VersioningType::Rfu(7),
                    nb_slots: 1,
                },
                "00 0a 01 71",
            ),
        ]
    }

    /// VersionRunningAns and VersionStoredAns (spec layout), with and without stored slots.
    fn version_answers() -> Vec<(Answer, &'static str)> {
        vec![
            (
                Answer::VersionRunning {
                    running_slot: 1,
                    version: 0x0001_0203,
                },
                "01 01 03 02 01 00",
            ),
            (
                Answer::VersionStored {
                    flags: 0b101,
                    slots: vec![
                        StoredSlot {
                            slot: 0,
                            version: 0x0001_0000,
                        },
                        StoredSlot {
                            slot: 2,
                            version: 0x0001_0200,
                        },
                    ],
                },
                "02 05 00 00 01 00 00 02 01 00",
            ),
            (
                Answer::VersionStored {
                    flags: 0,
                    slots: vec![],
                },
                "02 00",
            ),
        ]
    }

    /// SpaceStatusAns, including the heap values the air cannot express, and UptimeAns.
    fn space_and_uptime_answers() -> Vec<(Answer, &'static str)> {
        vec![
            (
                Answer::SpaceStatus {
                    heap_available: HeapAvailable::Bytes(0x1234),
                    slot_size: 0x0004_0000,
                },
                "03 34 12 00 00 00 00 04 00",
            ),
            (
                Answer::SpaceStatus {
                    heap_available: HeapAvailable::Unknown,
                    slot_size: 1,
                },
                "03 00 00 00 00 01 00 00 00",
            ),
            (
                Answer::SpaceStatus {
                    heap_available: HeapAvailable::Bytes(0),
                    slot_size: 0,
                },
                "03 01 00 00 00 00 00 00 00",
            ),
            (Answer::Uptime { seconds: 86_400 }, "04 80 51 01 00"),
        ]
    }

    /// DeviceDescriptionAns with each combination of strings present.
    fn description_answers() -> Vec<(Answer, &'static str)> {
        vec![
            (
                Answer::DeviceDescription {
                    manufacturer_id: Some("LTEK".into()),
                    device_id: Some("FF1705".into()),
                },
                "06 03 04 4c 54 45 4b 06 46 46 31 37 30 35",
            ),
            (
                Answer::DeviceDescription {
                    manufacturer_id: None,
                    device_id: Some("x".into()),
                },
                "06 01 01 78",
            ),
            (
                Answer::DeviceDescription {
                    manufacturer_id: Some(String::new()),
                    device_id: None,
                },
                "06 02 00",
            ),
            (
                Answer::DeviceDescription {
                    manufacturer_id: None,
                    device_id: None,
                },
                "06 00",
            ),
        ]
    }

    #[test]
    fn answers_both_ways() {
        for (ans, bytes) in answer_table() {
            assert_eq!(ans.to_vec().unwrap(), h(bytes), "{ans:?}");
            assert_eq!(Answer::from_slice(&h(bytes)).unwrap(), ans, "{bytes}");
            let (all, err) = decode_answers(&h(bytes));
            assert_eq!((all, err), (vec![ans], None));
        }
    }

    #[test]
    fn spec_table_19_example() {
        let mut frame = vec![cid::DEVICE_DESCRIPTION, 0x03, 0x04];
        frame.extend_from_slice(b"LTEK");
        frame.push(0x06);
        frame.extend_from_slice(b"FF1705");
        assert_eq!(
            Answer::from_slice(&frame).unwrap(),
            Answer::DeviceDescription {
                manufacturer_id: Some("LTEK".into()),
                device_id: Some("FF1705".into())
            }
        );
    }

    #[test]
    fn zero_slots_on_air_means_three() {
        let ans = Answer::from_slice(&h("00 0a 01 10")).unwrap();
        assert_eq!(
            ans,
            Answer::PackageVersion {
                package_identifier: 10,
                package_version: 1,
                versioning_type: VersioningType::MajorMinorPatch,
                nb_slots: 3
            }
        );
        let zero = Answer::PackageVersion {
            package_identifier: 10,
            package_version: 1,
            versioning_type: VersioningType::NotSupported,
            nb_slots: 0,
        };
        assert!(matches!(
            zero.to_vec(),
            Err(Error::FieldOutOfRange {
                field: "nb_slots",
                ..
            })
        ));
    }

    fn stored_0_and_2() -> Answer {
        Answer::VersionStored {
            flags: 0b101,
            slots: vec![
                StoredSlot {
                    slot: 0,
                    version: 0x0102_0304,
                },
                StoredSlot {
                    slot: 2,
                    version: 0x0a0b_0c0d,
                },
            ],
        }
    }

    #[test]
    fn version_stored_device_layout() {
        let ans = stored_0_and_2();
        let device = ans.to_vec_device_layout(3).unwrap();
        assert_eq!(device, h("02 05 04 03 02 01 00 00 00 00 0d 0c 0b 0a"));
        assert_eq!(Answer::from_slice(&device).unwrap(), ans);
        // More slots than flagged ones, trailing zero words.
        let device = ans.to_vec_device_layout(7).unwrap();
        assert_eq!(device.len(), 2 + 4 * 7);
        assert_eq!(Answer::from_slice(&device).unwrap(), ans);
        // Garbage in an unflagged slot's word is ignored.
        let noisy = h("02 05 04 03 02 01 ff ff ff ff 0d 0c 0b 0a");
        assert_eq!(Answer::from_slice(&noisy).unwrap(), ans);
        // nb_slots must reach the highest flagged slot.
        assert!(ans.to_vec_device_layout(2).is_err());
        assert!(ans.to_vec_device_layout(16).is_err());
        // Other answers are unaffected by the layout.
        let up = Answer::Uptime { seconds: 5 };
        assert_eq!(up.to_vec_device_layout(3).unwrap(), up.to_vec().unwrap());
    }

    #[test]
    fn version_stored_spec_layout_then_more_answers() {
        let mut payload = stored_0_and_2().to_vec().unwrap();
        let up = Answer::Uptime { seconds: 42 };
        payload.extend(up.to_vec().unwrap());
        let (all, err) = decode_answers(&payload);
        assert_eq!(err, None);
        assert_eq!(all, vec![stored_0_and_2(), up]);
    }

    #[test]
    fn version_stored_mismatched_slots_rejected() {
        let bad = Answer::VersionStored {
            flags: 0b11,
            slots: vec![StoredSlot {
                slot: 0,
                version: 1,
            }],
        };
        assert!(matches!(bad.to_vec(), Err(Error::SlotsMismatch { .. })));
        let unordered = Answer::VersionStored {
            flags: 0b11,
            slots: vec![
                StoredSlot {
                    slot: 1,
                    version: 1,
                },
                StoredSlot {
                    slot: 0,
                    version: 1,
                },
            ],
        };
        assert!(matches!(
            unordered.to_vec(),
            Err(Error::SlotsMismatch { .. })
        ));
    }

    #[test]
    fn several_answers_in_one_payload() {
        let answers = vec![
            Answer::PackageVersion {
                package_identifier: 10,
                package_version: 1,
                versioning_type: VersioningType::MajorMinorPatch,
                nb_slots: 2,
            },
            Answer::VersionRunning {
                running_slot: 0,
                version: 0x0002_0001,
            },
            Answer::Uptime { seconds: 3600 },
            Answer::DeviceDescription {
                manufacturer_id: Some("ACME".into()),
                device_id: None,
            },
            Answer::SpaceStatus {
                heap_available: HeapAvailable::Bytes(2048),
                slot_size: 65536,
            },
        ];
        let payload: Vec<u8> = answers.iter().flat_map(|a| a.to_vec().unwrap()).collect();
        assert_eq!(decode_answers(&payload), (answers, None));
    }

    /// Unknown commands and answers cut short, each alone in the payload.
    fn unknown_and_truncated_answers() -> Vec<(&'static str, Vec<Answer>, Error)> {
        vec![
            ("07", vec![], Error::UnknownCid { cid: 7 }),
            ("05 00", vec![], Error::UnknownCid { cid: 5 }),
            (
                "04 01 00 00",
                vec![],
                Error::TooShort {
                    command: "UptimeAns",
                    needed: 4,
                    got: 3,
                },
            ),
            (
                "00 0a",
                vec![],
                Error::TooShort {
                    command: "PackageVersionAns",
                    needed: 3,
                    got: 1,
                },
            ),
            (
                "01 00 01",
                vec![],
                Error::TooShort {
                    command: "VersionRunningAns",
                    needed: 5,
                    got: 2,
                },
            ),
            (
                "03 00 00 00 00 00 00 00",
                vec![],
                Error::TooShort {
                    command: "SpaceStatusAns",
                    needed: 8,
                    got: 7,
                },
            ),
            (
                "02",
                vec![],
                Error::TooShort {
                    command: "VersionStoredAns",
                    needed: 1,
                    got: 0,
                },
            ),
            (
                "02 03 01 00 00 00 02 00",
                vec![],
                Error::TooShort {
                    command: "VersionStoredAns",
                    needed: 9,
                    got: 7,
                },
            ),
            (
                "06",
                vec![],
                Error::TooShort {
                    command: "DeviceDescriptionAns",
                    needed: 1,
                    got: 0,
                },
            ),
            (
                "06 03 01 41",
                vec![],
                Error::TooShort {
                    command: "DeviceDescriptionAns",
                    needed: 4,
                    got: 3,
                },
            ),
        ]
    }

    /// Strings longer than what follows them, and garbage after a valid answer (which decodes).
    fn overflowing_and_trailing_answers() -> Vec<(&'static str, Vec<Answer>, Error)> {
        let up = Answer::Uptime { seconds: 1 };
        vec![
            (
                "06 03 09 4c 54 45 4b",
                vec![],
                Error::StringOverflow {
                    command: "DeviceDescriptionAns",
                    field: "manufacturer_id",
                    len: 9,
                    available: 4,
                },
            ),
            (
                "06 01 ff 41",
                vec![],
                Error::StringOverflow {
                    command: "DeviceDescriptionAns",
                    field: "device_id",
                    len: 255,
                    available: 1,
                },
            ),
            // Trailing garbage after a valid answer.
            (
                "04 01 00 00 00 ee",
                vec![up.clone()],
                Error::UnknownCid { cid: 0xee },
            ),
            (
                "04 01 00 00 00 04 00",
                vec![up.clone()],
                Error::TooShort {
                    command: "UptimeAns",
                    needed: 4,
                    got: 1,
                },
            ),
        ]
    }

    #[test]
    fn malformed_answers() {
        let cases = [
            unknown_and_truncated_answers(),
            overflowing_and_trailing_answers(),
        ]
        .concat();
        for (bytes, ok, err) in cases {
            assert_eq!(decode_answers(&h(bytes)), (ok, Some(err)), "{bytes}");
        }
        assert_eq!(decode_answers(&[]), (vec![], None));
        assert_eq!(
            Answer::from_slice(&h("04 01 00 00 00 00")),
            Err(Error::TrailingBytes {
                command: "uptime",
                extra: 1
            })
        );
        assert_eq!(Answer::from_slice(&[]), Err(Error::Empty));
    }

    #[test]
    fn invalid_utf8_is_lossy() {
        let ans = Answer::from_slice(&h("06 01 03 41 ff 42")).unwrap();
        assert_eq!(
            ans,
            Answer::DeviceDescription {
                manufacturer_id: None,
                device_id: Some("A\u{fffd}B".into())
            }
        );
    }

    #[test]
    fn encode_errors() {
        let long = Answer::DeviceDescription {
            manufacturer_id: Some("x".repeat(256)),
            device_id: None,
        };
        assert_eq!(
            long.to_vec(),
            Err(Error::StringTooLong {
                field: "manufacturer_id",
                len: 256
            })
        );
        let rfu_collides = Answer::PackageVersion {
            package_identifier: 10,
            package_version: 1,
            versioning_type: VersioningType::Rfu(1),
            nb_slots: 3,
        };
        assert!(rfu_collides.to_vec().is_err());
        let slot = Answer::VersionRunning {
            running_slot: 16,
            version: 0,
        };
        assert!(slot.to_vec().is_err());
    }

    #[test]
    fn versioning_type_nibbles() {
        for n in 0..16 {
            assert_eq!(VersioningType::from_nibble(n).to_nibble(), n);
        }
        assert_eq!(VersioningType::from_nibble(2), VersioningType::GpsSeconds);
        assert_eq!(VersioningType::from_nibble(3), VersioningType::Rfu(3));
    }

    #[test]
    fn render() {
        let v = u32::from_le_bytes([3, 2, 1, 0]);
        assert_eq!(
            render_version(v, Some(VersioningType::MajorMinorPatch)),
            "1.2.3"
        );
        assert_eq!(
            render_version(0xff0a_0b0c, Some(VersioningType::MajorMinorPatch)),
            "10.11.12"
        );
        assert_eq!(
            render_version(0, Some(VersioningType::GpsSeconds)),
            "1980-01-06T00:00:00Z"
        );
        // 2021-06-08T15:15:10Z in GPS seconds (18 leap seconds ahead of UTC).
        let gps = 1_623_165_310 - 315_964_800 + 18;
        assert_eq!(
            render_version(gps, Some(VersioningType::GpsSeconds)),
            "2021-06-08T15:15:10Z"
        );
        assert_eq!(render_version(0x0001_0203, None), "0x00010203 raw");
        assert_eq!(
            render_version(0xdead_beef, Some(VersioningType::Rfu(9))),
            "0xdeadbeef raw"
        );
        assert_eq!(
            render_version(7, Some(VersioningType::NotSupported)),
            "0x00000007 raw"
        );
    }

    fn arb_answer() -> impl Strategy<Value = Answer> {
        let vt = prop_oneof![
            Just(VersioningType::NotSupported),
            Just(VersioningType::MajorMinorPatch),
            Just(VersioningType::GpsSeconds),
            (3u8..=15).prop_map(VersioningType::Rfu),
        ];
        let text = proptest::option::of("[ -~\u{e9}\u{4e2d}]{0,40}");
        prop_oneof![
            (any::<u8>(), any::<u8>(), vt, 1u8..=15).prop_map(|(pi, pv, vt, nb)| {
                Answer::PackageVersion {
                    package_identifier: pi,
                    package_version: pv,
                    versioning_type: vt,
                    nb_slots: nb,
                }
            }),
            (0u8..=15, any::<u32>()).prop_map(|(s, v)| Answer::VersionRunning {
                running_slot: s,
                version: v
            }),
            (any::<u8>(), proptest::collection::vec(any::<u32>(), 8)).prop_map(|(flags, vs)| {
                let slots = (0..8u8)
                    .filter(|i| flags & (1 << i) != 0)
                    .zip(vs)
                    .map(|(slot, version)| StoredSlot { slot, version })
                    .collect();
                Answer::VersionStored { flags, slots }
            }),
            (any::<u32>(), any::<u32>()).prop_map(|(heap, size)| Answer::SpaceStatus {
                heap_available: match heap {
                    0 => HeapAvailable::Unknown,
                    1 => HeapAvailable::Bytes(0),
                    n => HeapAvailable::Bytes(n),
                },
                slot_size: size,
            }),
            any::<u32>().prop_map(|s| Answer::Uptime { seconds: s }),
            (text.clone(), text).prop_map(|(m, d)| Answer::DeviceDescription {
                manufacturer_id: m,
                device_id: d
            }),
        ]
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        prop_oneof![
            Just(Request::PackageVersion),
            Just(Request::VersionRunning),
            (0u8..=15).prop_map(|n| Request::VersionStored { nb_slots: n }),
            Just(Request::SpaceStatus),
            Just(Request::Uptime),
            (0u8..=15).prop_map(|s| Request::EraseSlot { slot: s }),
            (any::<bool>(), any::<bool>()).prop_map(|(m, d)| Request::DeviceDescription {
                manufacturer_id: m,
                device_id: d
            }),
        ]
    }

    proptest! {
        #[test]
        fn decoders_never_panic(
            // Small values are valid CIDs and short lengths, which reach deeper paths.
            bytes in proptest::collection::vec(prop_oneof![0u8..8, any::<u8>()], 0..80)
        ) {
            let (answers, err) = decode_answers(&bytes);
            prop_assert!(err.is_some() || !answers.is_empty() || bytes.is_empty());
            let _ = Request::from_slice(&bytes);
            let _ = Answer::from_slice(&bytes);
            let _ = decode_requests(&bytes);
        }

        #[test]
        fn request_round_trip(req in arb_request()) {
            let bytes = req.to_vec().unwrap();
            prop_assert_eq!(Request::from_slice(&bytes).unwrap(), req);
        }

        #[test]
        fn answer_round_trip(ans in arb_answer()) {
            let bytes = ans.to_vec().unwrap();
            prop_assert_eq!(Answer::from_slice(&bytes).unwrap(), ans.clone());
            if let Answer::VersionStored { flags, .. } = &ans {
                let nb = highest_flagged_slot_count(*flags).max(1);
                for n in nb..=15 {
                    let dev = ans.to_vec_device_layout(n).unwrap();
                    prop_assert_eq!(Answer::from_slice(&dev).unwrap(), ans.clone());
                }
            }
        }

        #[test]
        fn answer_sequences_round_trip(answers in proptest::collection::vec(arb_answer(), 0..6)) {
            // Spec-layout VersionStored followed by more answers may be read as the
            // device layout when lengths line up (documented); keep it last.
            let mut answers = answers;
            answers.sort_by_key(|a| matches!(a, Answer::VersionStored { .. }));
            let stored = answers.iter().filter(|a| matches!(a, Answer::VersionStored { .. })).count();
            if stored > 1 {
                answers.truncate(answers.len() - stored + 1);
            }
            let payload: Vec<u8> = answers.iter().flat_map(|a| a.to_vec().unwrap()).collect();
            prop_assert_eq!(decode_answers(&payload), (answers, None));
        }
    }
}
