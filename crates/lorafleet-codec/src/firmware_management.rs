//! LoRa Alliance Firmware Management Protocol (TS006 v1.0.0), PackageIdentifier 4.
//!
//! Stock device stacks (LoRaMac-node, ST's STM32WL FUOTA middleware, LoRa
//! Basics Modem) report their firmware through this package rather than
//! through Version & Status, so it is how lorafleet checks what such a device
//! runs, what image it received, and when it reboots.
//!
//! Default FPort 203. Requests go down, answers come up with the same CID;
//! integers are little-endian. Requests are encoded here for the server and
//! decoded for the simulated devices, answers the other way round, so both
//! sides of the simulated network share one definition of every byte.
//!
//! Decoders face radio input: an empty frame, a short command, an unknown CID
//! or trailing bytes are [`enum@Error`]s, never panics, and the error names the
//! command and what was missing.

use thiserror::Error;

/// PackageIdentifier of the Firmware Management package.
pub const PACKAGE_IDENTIFIER: u8 = 4;
/// Version of the package specification implemented here.
pub const PACKAGE_VERSION: u8 = 1;
/// FPort the specification and the known device stacks use by default.
pub const DEFAULT_F_PORT: u8 = 203;
/// Largest countdown a DevRebootCountdownReq can carry (24 bits, all ones
/// being "cancel", so the largest real countdown is one less).
pub const MAX_COUNTDOWN_S: u32 = 0x00ff_fffe;

/// The 24-bit all-ones value: "cancel" in DevRebootCountdownReq/Ans.
const COUNTDOWN_CANCEL: u32 = 0x00ff_ffff;
/// The 32-bit all-ones value: "cancel" in DevRebootTimeReq/Ans.
const REBOOT_TIME_CANCEL: u32 = u32::MAX;
/// UpImageStatus value (bits 1:0) of a valid image; only it carries a version.
const IMAGE_VALID: u8 = 3;
/// DevDeleteImageAns bit: no valid image to delete.
const DELETE_NO_VALID_IMAGE: u8 = 0b01;
/// DevDeleteImageAns bit: the stored image has another version.
const DELETE_INVALID_VERSION: u8 = 0b10;

/// Command identifiers, shared by a request and its answer.
pub mod cid {
    /// PackageVersionReq / PackageVersionAns.
    pub const PACKAGE_VERSION: u8 = 0x00;
    /// DevVersionReq / DevVersionAns.
    pub const DEV_VERSION: u8 = 0x01;
    /// DevRebootTimeReq / DevRebootTimeAns.
    pub const DEV_REBOOT_TIME: u8 = 0x02;
    /// DevRebootCountdownReq / DevRebootCountdownAns.
    pub const DEV_REBOOT_COUNTDOWN: u8 = 0x03;
    /// DevUpgradeImageReq / DevUpgradeImageAns.
    pub const DEV_UPGRADE_IMAGE: u8 = 0x04;
    /// DevDeleteImageReq / DevDeleteImageAns.
    pub const DEV_DELETE_IMAGE: u8 = 0x05;
}

/// Why a Firmware Management frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Error {
    /// The frame has no bytes at all, so not even a CID.
    #[error("empty payload: expected a Firmware Management command identifier")]
    Empty,
    /// The CID is not defined by the package.
    #[error("unknown Firmware Management command identifier 0x{cid:02x}")]
    UnknownCid {
        /// The offending CID.
        cid: u8,
    },
    /// The frame ends before the command's fields do.
    #[error(
        "{command} (CID 0x{cid:02x}) too short: needs {needed} byte(s) after the CID, got {got}"
    )]
    TooShort {
        /// CID of the command being decoded.
        cid: u8,
        /// Command being decoded, e.g. `"DevVersionAns"`.
        command: &'static str,
        /// Bytes the command needs after its CID.
        needed: usize,
        /// Bytes actually left after the CID.
        got: usize,
    },
    /// A single-command decode found bytes after the command.
    #[error("{command}: {extra} unexpected trailing byte(s)")]
    TrailingBytes {
        /// Command that was decoded (snake_case name).
        command: &'static str,
        /// Number of bytes left over.
        extra: usize,
    },
    /// A value does not fit its field, or would read as one of the field's
    /// special values (0 = as soon as possible, all ones = cancel).
    #[error("{field} = {value} is out of range ({min}..={max})")]
    FieldOutOfRange {
        /// Field name, e.g. `"countdown_s"`.
        field: &'static str,
        /// The rejected value.
        value: u32,
        /// Smallest allowed value.
        min: u32,
        /// Largest allowed value.
        max: u32,
    },
}

/// Splits off the first `N` bytes of a command body, or reports which command was cut short.
fn take<const N: usize>(body: &[u8], cid: u8, command: &'static str) -> Result<[u8; N], Error> {
    body.get(..N)
        .and_then(|head| <[u8; N]>::try_from(head).ok())
        .ok_or(Error::TooShort {
            cid,
            command,
            needed: N,
            got: body.len(),
        })
}

fn u24_le([a, b, c]: [u8; 3]) -> u32 {
    u32::from_le_bytes([a, b, c, 0])
}

/// Checks `value` against `min..=max`; values are rejected, never masked, so
/// a caller bug cannot turn into "reboot now" or "cancel".
fn in_range(field: &'static str, value: u32, min: u32, max: u32) -> Result<u32, Error> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(Error::FieldOutOfRange {
            field,
            value,
            min,
            max,
        })
    }
}

/// When DevRebootTimeReq asks the device to reboot.
///
/// An enum rather than a bare u32 because two values of the field are
/// commands, not times: a caller cannot ask for GPS second 0 by accident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RebootTime {
    /// Field value 0: reboot as soon as possible. Neither LBM nor ST answers
    /// this (LBM hands it to the application, ST resets in the handler), so
    /// the next uplink is the confirmation.
    AsSoonAsPossible,
    /// Field value `FFFFFFFF`: cancel the pending reboot.
    Cancel,
    /// Reboot at this GPS time (seconds, 1..=0xFFFFFFFE). One GPS time for a
    /// whole group reboots a fleet together.
    At {
        /// GPS seconds modulo 2^32.
        gps_seconds: u32,
    },
}

impl RebootTime {
    fn to_field(self) -> Result<u32, Error> {
        match self {
            RebootTime::AsSoonAsPossible => Ok(0),
            RebootTime::Cancel => Ok(REBOOT_TIME_CANCEL),
            RebootTime::At { gps_seconds } => {
                in_range("gps_seconds", gps_seconds, 1, REBOOT_TIME_CANCEL - 1)
            }
        }
    }

    fn from_field(v: u32) -> RebootTime {
        match v {
            0 => RebootTime::AsSoonAsPossible,
            REBOOT_TIME_CANCEL => RebootTime::Cancel,
            gps_seconds => RebootTime::At { gps_seconds },
        }
    }
}

/// How long DevRebootCountdownReq asks the device to wait before rebooting.
///
/// Preferred over [`RebootTime`] for ST's middleware, whose DevRebootTimeReq
/// subtracts a Unix-based clock from the GPS time and is off by 315964800 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RebootCountdown {
    /// Field value 0: reboot as soon as possible (no answer comes, see
    /// [`RebootTime::AsSoonAsPossible`]).
    AsSoonAsPossible,
    /// Field value `FFFFFF`: cancel the pending reboot.
    Cancel,
    /// Reboot after this many seconds (1..=[`MAX_COUNTDOWN_S`]).
    After {
        /// Seconds from reception.
        seconds: u32,
    },
}

impl RebootCountdown {
    fn to_field(self) -> Result<u32, Error> {
        match self {
            RebootCountdown::AsSoonAsPossible => Ok(0),
            RebootCountdown::Cancel => Ok(COUNTDOWN_CANCEL),
            RebootCountdown::After { seconds } => {
                in_range("countdown_s", seconds, 1, MAX_COUNTDOWN_S)
            }
        }
    }

    fn from_field(v: u32) -> RebootCountdown {
        match v {
            0 => RebootCountdown::AsSoonAsPossible,
            COUNTDOWN_CANCEL => RebootCountdown::Cancel,
            seconds => RebootCountdown::After { seconds },
        }
    }
}

/// A request from the server to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Request {
    /// Ask which package (4) and version (1) the device implements.
    PackageVersion,
    /// Ask for the running firmware and the hardware version.
    DevVersion,
    /// Schedule (or cancel) a reboot at a GPS time.
    DevRebootTime(RebootTime),
    /// Schedule (or cancel) a reboot after a countdown.
    DevRebootCountdown(RebootCountdown),
    /// Ask for the status and version of the image received (by fragmentation).
    DevUpgradeImage,
    /// Ask the device to delete the received image if it has this version.
    DevDeleteImage {
        /// FirmwareToDeleteVersion, as the device reports it in DevUpgradeImageAns.
        version: u32,
    },
}

impl Request {
    /// The CID this request is sent with.
    pub fn cid(&self) -> u8 {
        match self {
            Request::PackageVersion => cid::PACKAGE_VERSION,
            Request::DevVersion => cid::DEV_VERSION,
            Request::DevRebootTime(_) => cid::DEV_REBOOT_TIME,
            Request::DevRebootCountdown(_) => cid::DEV_REBOOT_COUNTDOWN,
            Request::DevUpgradeImage => cid::DEV_UPGRADE_IMAGE,
            Request::DevDeleteImage { .. } => cid::DEV_DELETE_IMAGE,
        }
    }

    /// Stable snake_case name, the `command` of the device page's API.
    pub fn command_name(&self) -> &'static str {
        command_name(self.cid())
    }

    /// Encodes the request as a downlink payload.
    ///
    /// Errors when a time or countdown does not fit its field or would read
    /// as "as soon as possible" / "cancel".
    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        let mut out = vec![self.cid()];
        match *self {
            Request::PackageVersion | Request::DevVersion | Request::DevUpgradeImage => {}
            Request::DevRebootTime(t) => out.extend(t.to_field()?.to_le_bytes()),
            Request::DevRebootCountdown(c) => {
                out.extend(c.to_field()?.to_le_bytes().get(..3).unwrap_or_default())
            }
            Request::DevDeleteImage { version } => out.extend(version.to_le_bytes()),
        }
        Ok(out)
    }

    /// Decodes exactly one request (device side); trailing bytes are an error.
    pub fn from_slice(b: &[u8]) -> Result<Request, Error> {
        let (req, used) = decode_request(b)?;
        no_trailing(req.command_name(), b, used)?;
        Ok(req)
    }
}

/// The snake_case name of the command with this CID (requests and answers
/// share it); CIDs outside the package give `"unknown"`.
fn command_name(cid: u8) -> &'static str {
    match cid {
        cid::PACKAGE_VERSION => "package_version",
        cid::DEV_VERSION => "dev_version",
        cid::DEV_REBOOT_TIME => "reboot_time",
        cid::DEV_REBOOT_COUNTDOWN => "reboot_countdown",
        cid::DEV_UPGRADE_IMAGE => "upgrade_image",
        cid::DEV_DELETE_IMAGE => "delete_image",
        _ => "unknown",
    }
}

fn no_trailing(command: &'static str, b: &[u8], used: usize) -> Result<(), Error> {
    match b.len().saturating_sub(used) {
        0 => Ok(()),
        extra => Err(Error::TrailingBytes { command, extra }),
    }
}

/// Decodes one request from the front of `b`, returning it and the bytes it used.
fn decode_request(b: &[u8]) -> Result<(Request, usize), Error> {
    let (&cid, body) = b.split_first().ok_or(Error::Empty)?;
    let (req, body_used) = match cid {
        cid::PACKAGE_VERSION => (Request::PackageVersion, 0),
        cid::DEV_VERSION => (Request::DevVersion, 0),
        cid::DEV_UPGRADE_IMAGE => (Request::DevUpgradeImage, 0),
        cid::DEV_REBOOT_TIME => {
            let v = u32::from_le_bytes(take(body, cid, "DevRebootTimeReq")?);
            (Request::DevRebootTime(RebootTime::from_field(v)), 4)
        }
        cid::DEV_REBOOT_COUNTDOWN => {
            let v = u24_le(take(body, cid, "DevRebootCountdownReq")?);
            (
                Request::DevRebootCountdown(RebootCountdown::from_field(v)),
                3,
            )
        }
        cid::DEV_DELETE_IMAGE => {
            let version = u32::from_le_bytes(take(body, cid, "DevDeleteImageReq")?);
            (Request::DevDeleteImage { version }, 4)
        }
        other => return Err(Error::UnknownCid { cid: other }),
    };
    Ok((req, 1 + body_used))
}

/// Decodes requests back to back (a simulated device's view of a downlink).
///
/// Any malformed or unknown command fails the whole frame, as LoRa Basics
/// Modem does: answering half of a frame would hide the problem.
pub fn parse_requests(payload: &[u8]) -> Result<Vec<Request>, Error> {
    parse_all(payload, decode_request)
}

/// Runs `decode` over `payload` until it is consumed; an empty payload is
/// [`Error::Empty`], since a frame on this port without a command is malformed.
fn parse_all<T>(
    payload: &[u8],
    decode: impl Fn(&[u8]) -> Result<(T, usize), Error>,
) -> Result<Vec<T>, Error> {
    if payload.is_empty() {
        return Err(Error::Empty);
    }
    let mut out = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        let (item, used) = decode(rest)?;
        out.push(item);
        rest = rest.get(used..).unwrap_or_default();
    }
    Ok(out)
}

/// A version field exactly as it came off the air.
///
/// The specification says FWversion is a u32 (little-endian like every
/// integer in the package) and LBM sends it that way, but ST's answer to
/// DevVersionReq sends Major, Minor, Patch, Revision most significant first
/// (its unsolicited boot answer is little-endian again). Which one a device
/// sent cannot be told from the bytes, so they are kept and both readings are
/// offered; the caller picks by what it knows of the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RawVersion(pub [u8; 4]);

impl RawVersion {
    /// The bytes that [`RawVersion::as_u32_le`] reads back as `v`.
    pub fn from_u32_le(v: u32) -> RawVersion {
        RawVersion(v.to_le_bytes())
    }

    /// The specification's (and LBM's) reading: a little-endian u32.
    pub fn as_u32_le(&self) -> u32 {
        u32::from_le_bytes(self.0)
    }

    /// ST's DevVersionAns reading: the bytes as a big-endian u32, so that
    /// `0x01020304` means 1.2.3.4 under both readings of their own senders.
    pub fn as_u32_msb_first(&self) -> u32 {
        u32::from_be_bytes(self.0)
    }

    /// `"major.minor.patch.revision"` with the bytes in air order (ST).
    pub fn dotted_msb_first(&self) -> String {
        let [a, b, c, d] = self.0;
        format!("{a}.{b}.{c}.{d}")
    }

    /// `"major.minor.patch.revision"` of the little-endian u32, most
    /// significant byte first (LBM applications packing `major << 24 | ...`).
    pub fn dotted_le(&self) -> String {
        let [d, c, b, a] = self.0;
        format!("{a}.{b}.{c}.{d}")
    }

    /// The four bytes as lowercase hex, in air order, for storing exactly what came.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// What a DevRebootTimeAns says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RebootTimeAnswer {
    /// `0`: the device cannot reboot at that time (in the past, or LBM
    /// without a synchronised clock, which then also sends a DeviceTimeReq).
    CannotReboot,
    /// `FFFFFFFF`: the pending reboot was cancelled.
    Cancelled,
    /// Seconds from this answer to the reboot.
    InSeconds(u32),
}

/// What a DevRebootCountdownAns says (both stacks echo the countdown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RebootCountdownAnswer {
    /// `FFFFFF`: the pending reboot was cancelled.
    Cancelled,
    /// Seconds until the reboot (0..=[`MAX_COUNTDOWN_S`]).
    InSeconds(u32),
}

/// The received image's status from DevUpgradeImageAns (UpImageStatus bits 1:0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageStatus {
    /// 0: no image received.
    NoImage,
    /// 1: the image is corrupt or its signature is bad.
    Corrupt,
    /// 2: the image is for other hardware.
    WrongHardware,
    /// 3: a valid image that will run after the reboot. ST's SMARTDELTA builds
    /// send version `00000000` here (never set), so 0 means "unknown", not 0.0.0.0.
    Valid {
        /// nextFirmwareVersion, raw (see [`RawVersion`] for its readings).
        next_firmware_version: RawVersion,
    },
}

/// A DevDeleteImageAns: which of its two error bits are set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DeleteImageResult {
    /// Bit 0, ErrorNoValidImage: there was no valid image to delete.
    pub no_valid_image: bool,
    /// Bit 1, ErrorInvalidVersion: the stored image has another version
    /// (ST never sets it: it erases without comparing).
    pub invalid_version: bool,
}

impl DeleteImageResult {
    /// Whether the image was deleted (no error bit set).
    pub fn deleted(&self) -> bool {
        !self.no_valid_image && !self.invalid_version
    }

    fn to_byte(self) -> u8 {
        let mut b = 0;
        if self.no_valid_image {
            b |= DELETE_NO_VALID_IMAGE;
        }
        if self.invalid_version {
            b |= DELETE_INVALID_VERSION;
        }
        b
    }

    /// RFU bits 7:2 are ignored, as a device following the spec leaves them 0.
    fn from_byte(b: u8) -> DeleteImageResult {
        DeleteImageResult {
            no_valid_image: b & DELETE_NO_VALID_IMAGE != 0,
            invalid_version: b & DELETE_INVALID_VERSION != 0,
        }
    }
}

/// An answer from a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Answer {
    /// PackageVersionAns.
    PackageVersion {
        /// Should be [`PACKAGE_IDENTIFIER`].
        package_identifier: u8,
        /// Should be [`PACKAGE_VERSION`].
        package_version: u8,
    },
    /// DevVersionAns.
    DevVersion {
        /// FWversion of the running firmware.
        firmware: RawVersion,
        /// HWversion (ST always sends 0).
        hardware: RawVersion,
    },
    /// DevRebootTimeAns.
    DevRebootTime(RebootTimeAnswer),
    /// DevRebootCountdownAns.
    DevRebootCountdown(RebootCountdownAnswer),
    /// DevUpgradeImageAns.
    DevUpgradeImage(ImageStatus),
    /// DevDeleteImageAns.
    DevDeleteImage(DeleteImageResult),
}

impl Answer {
    /// The CID this answer is sent with.
    pub fn cid(&self) -> u8 {
        match self {
            Answer::PackageVersion { .. } => cid::PACKAGE_VERSION,
            Answer::DevVersion { .. } => cid::DEV_VERSION,
            Answer::DevRebootTime(_) => cid::DEV_REBOOT_TIME,
            Answer::DevRebootCountdown(_) => cid::DEV_REBOOT_COUNTDOWN,
            Answer::DevUpgradeImage(_) => cid::DEV_UPGRADE_IMAGE,
            Answer::DevDeleteImage(_) => cid::DEV_DELETE_IMAGE,
        }
    }

    /// Stable snake_case name, matching [`Request::command_name`] of the request answered.
    pub fn command_name(&self) -> &'static str {
        command_name(self.cid())
    }

    /// Encodes the answer as a device would.
    ///
    /// Errors for a countdown above 24 bits or an `InSeconds` that would
    /// read as "cancelled" / "cannot reboot".
    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        let mut out = vec![self.cid()];
        match *self {
            Answer::PackageVersion {
                package_identifier,
                package_version,
            } => out.extend([package_identifier, package_version]),
            Answer::DevVersion { firmware, hardware } => {
                out.extend(firmware.0);
                out.extend(hardware.0);
            }
            Answer::DevRebootTime(a) => {
                let v = match a {
                    RebootTimeAnswer::CannotReboot => 0,
                    RebootTimeAnswer::Cancelled => REBOOT_TIME_CANCEL,
                    RebootTimeAnswer::InSeconds(s) => {
                        in_range("seconds", s, 1, REBOOT_TIME_CANCEL - 1)?
                    }
                };
                out.extend(v.to_le_bytes());
            }
            Answer::DevRebootCountdown(a) => {
                let v = match a {
                    RebootCountdownAnswer::Cancelled => COUNTDOWN_CANCEL,
                    RebootCountdownAnswer::InSeconds(s) => {
                        in_range("countdown_s", s, 0, MAX_COUNTDOWN_S)?
                    }
                };
                out.extend(v.to_le_bytes().get(..3).unwrap_or_default());
            }
            Answer::DevUpgradeImage(status) => match status {
                ImageStatus::NoImage => out.push(0),
                ImageStatus::Corrupt => out.push(1),
                ImageStatus::WrongHardware => out.push(2),
                ImageStatus::Valid {
                    next_firmware_version,
                } => {
                    out.push(IMAGE_VALID);
                    out.extend(next_firmware_version.0);
                }
            },
            Answer::DevDeleteImage(r) => out.push(r.to_byte()),
        }
        Ok(out)
    }

    /// Decodes exactly one answer; trailing bytes are an error.
    pub fn from_slice(b: &[u8]) -> Result<Answer, Error> {
        let (ans, used) = decode_answer(b)?;
        no_trailing(ans.command_name(), b, used)?;
        Ok(ans)
    }
}

/// Decodes one answer from the front of `b`, returning it and the bytes it used.
fn decode_answer(b: &[u8]) -> Result<(Answer, usize), Error> {
    let (&cid, body) = b.split_first().ok_or(Error::Empty)?;
    let (ans, body_used) = match cid {
        cid::PACKAGE_VERSION => {
            let [package_identifier, package_version] = take(body, cid, "PackageVersionAns")?;
            let ans = Answer::PackageVersion {
                package_identifier,
                package_version,
            };
            (ans, 2)
        }
        cid::DEV_VERSION => {
            let [f0, f1, f2, f3, h0, h1, h2, h3] = take(body, cid, "DevVersionAns")?;
            let ans = Answer::DevVersion {
                firmware: RawVersion([f0, f1, f2, f3]),
                hardware: RawVersion([h0, h1, h2, h3]),
            };
            (ans, 8)
        }
        cid::DEV_REBOOT_TIME => {
            let ans = match u32::from_le_bytes(take(body, cid, "DevRebootTimeAns")?) {
                0 => RebootTimeAnswer::CannotReboot,
                REBOOT_TIME_CANCEL => RebootTimeAnswer::Cancelled,
                s => RebootTimeAnswer::InSeconds(s),
            };
            (Answer::DevRebootTime(ans), 4)
        }
        cid::DEV_REBOOT_COUNTDOWN => {
            let ans = match u24_le(take(body, cid, "DevRebootCountdownAns")?) {
                COUNTDOWN_CANCEL => RebootCountdownAnswer::Cancelled,
                s => RebootCountdownAnswer::InSeconds(s),
            };
            (Answer::DevRebootCountdown(ans), 3)
        }
        cid::DEV_UPGRADE_IMAGE => decode_upgrade_image(body)?,
        cid::DEV_DELETE_IMAGE => {
            let [r] = take(body, cid, "DevDeleteImageAns")?;
            (Answer::DevDeleteImage(DeleteImageResult::from_byte(r)), 1)
        }
        other => return Err(Error::UnknownCid { cid: other }),
    };
    Ok((ans, 1 + body_used))
}

/// Decodes a DevUpgradeImageAns body. Only a valid image (status 3) carries
/// nextFirmwareVersion, so the status decides the length. Bits 7:2 are RFU and
/// ignored.
fn decode_upgrade_image(body: &[u8]) -> Result<(Answer, usize), Error> {
    const COMMAND: &str = "DevUpgradeImageAns";
    let cid = cid::DEV_UPGRADE_IMAGE;
    let [status] = take(body, cid, COMMAND)?;
    let status = match status & 0b11 {
        0 => ImageStatus::NoImage,
        1 => ImageStatus::Corrupt,
        2 => ImageStatus::WrongHardware,
        _ => {
            let [_, v0, v1, v2, v3] = take(body, cid, COMMAND)?;
            let ans = ImageStatus::Valid {
                next_firmware_version: RawVersion([v0, v1, v2, v3]),
            };
            return Ok((Answer::DevUpgradeImage(ans), 5));
        }
    };
    Ok((Answer::DevUpgradeImage(status), 1))
}

/// Decodes the answers of one uplink, back to back.
///
/// Any malformed or unknown answer fails the whole frame with an error naming
/// the CID and what was short; a frame with no bytes is [`Error::Empty`].
/// Answers before the bad one are not returned: a frame that does not parse
/// to the end is not trusted as a report of the device's firmware.
pub fn parse_answers(payload: &[u8]) -> Result<Vec<Answer>, Error> {
    parse_all(payload, decode_answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    fn request_table() -> Vec<(Request, &'static str)> {
        use RebootCountdown as C;
        use RebootTime as T;
        vec![
            (Request::PackageVersion, "00"),
            (Request::DevVersion, "01"),
            (Request::DevRebootTime(T::AsSoonAsPossible), "02 00000000"),
            (Request::DevRebootTime(T::Cancel), "02 ffffffff"),
            (
                Request::DevRebootTime(T::At {
                    gps_seconds: 0x5678_9abc,
                }),
                "02 bc9a7856",
            ),
            (
                Request::DevRebootTime(T::At { gps_seconds: 1 }),
                "02 01000000",
            ),
            (
                Request::DevRebootCountdown(C::AsSoonAsPossible),
                "03 000000",
            ),
            (Request::DevRebootCountdown(C::Cancel), "03 ffffff"),
            (
                Request::DevRebootCountdown(C::After { seconds: 3600 }),
                "03 100e00",
            ),
            (
                Request::DevRebootCountdown(C::After {
                    seconds: MAX_COUNTDOWN_S,
                }),
                "03 feffff",
            ),
            (Request::DevUpgradeImage, "04"),
            (
                Request::DevDeleteImage {
                    version: 0x0102_0304,
                },
                "05 04030201",
            ),
        ]
    }

    #[test]
    fn requests_both_ways() {
        for (req, bytes) in request_table() {
            assert_eq!(req.to_vec().unwrap(), h(bytes), "{req:?}");
            assert_eq!(Request::from_slice(&h(bytes)), Ok(req), "{bytes}");
        }
        let all: Vec<u8> = request_table().iter().flat_map(|(_, b)| h(b)).collect();
        let reqs: Vec<Request> = request_table().into_iter().map(|(r, _)| r).collect();
        assert_eq!(parse_requests(&all), Ok(reqs));
    }

    #[test]
    fn request_values_that_do_not_fit_are_errors() {
        let cases = [
            (
                Request::DevRebootCountdown(RebootCountdown::After {
                    seconds: 0x0100_0000,
                }),
                "countdown_s",
                0x0100_0000,
                1,
                MAX_COUNTDOWN_S,
            ),
            // All ones would be read as "cancel", 0 as "now".
            (
                Request::DevRebootCountdown(RebootCountdown::After {
                    seconds: 0x00ff_ffff,
                }),
                "countdown_s",
                0x00ff_ffff,
                1,
                MAX_COUNTDOWN_S,
            ),
            (
                Request::DevRebootCountdown(RebootCountdown::After { seconds: 0 }),
                "countdown_s",
                0,
                1,
                MAX_COUNTDOWN_S,
            ),
            (
                Request::DevRebootTime(RebootTime::At { gps_seconds: 0 }),
                "gps_seconds",
                0,
                1,
                u32::MAX - 1,
            ),
            (
                Request::DevRebootTime(RebootTime::At {
                    gps_seconds: u32::MAX,
                }),
                "gps_seconds",
                u32::MAX,
                1,
                u32::MAX - 1,
            ),
        ];
        for (req, field, value, min, max) in cases {
            assert_eq!(
                req.to_vec(),
                Err(Error::FieldOutOfRange {
                    field,
                    value,
                    min,
                    max
                }),
                "{req:?}"
            );
        }
    }

    #[test]
    fn malformed_requests() {
        let short = |cid, command, needed, got| Error::TooShort {
            cid,
            command,
            needed,
            got,
        };
        let cases = [
            ("", Error::Empty),
            ("06", Error::UnknownCid { cid: 6 }),
            ("ff", Error::UnknownCid { cid: 0xff }),
            ("02 000000", short(2, "DevRebootTimeReq", 4, 3)),
            ("03 0000", short(3, "DevRebootCountdownReq", 3, 2)),
            ("05", short(5, "DevDeleteImageReq", 4, 0)),
            // An unknown CID after a good request voids the frame.
            ("01 07", Error::UnknownCid { cid: 7 }),
        ];
        for (bytes, err) in cases {
            assert_eq!(parse_requests(&h(bytes)), Err(err), "{bytes}");
        }
        assert_eq!(
            Request::from_slice(&h("01 00")),
            Err(Error::TrailingBytes {
                command: "dev_version",
                extra: 1
            })
        );
        assert_eq!(
            Request::from_slice(&h("03 100e00 00")),
            Err(Error::TrailingBytes {
                command: "reboot_countdown",
                extra: 1
            })
        );
    }

    fn answer_table() -> Vec<(Answer, &'static str)> {
        use RebootCountdownAnswer as C;
        use RebootTimeAnswer as T;
        let valid = |v: [u8; 4]| {
            Answer::DevUpgradeImage(ImageStatus::Valid {
                next_firmware_version: RawVersion(v),
            })
        };
        let deleted = |no_valid_image, invalid_version| {
            Answer::DevDeleteImage(DeleteImageResult {
                no_valid_image,
                invalid_version,
            })
        };
        vec![
            (
                Answer::PackageVersion {
                    package_identifier: 4,
                    package_version: 1,
                },
                "00 04 01",
            ),
            (
                Answer::DevVersion {
                    firmware: RawVersion::from_u32_le(0x0102_0304),
                    hardware: RawVersion::from_u32_le(7),
                },
                "01 04030201 07000000",
            ),
            // ST: Major, Minor, Patch, Revision most significant first; HW 0.
            (
                Answer::DevVersion {
                    firmware: RawVersion([1, 2, 3, 4]),
                    hardware: RawVersion([0; 4]),
                },
                "01 01020304 00000000",
            ),
            (Answer::DevRebootTime(T::CannotReboot), "02 00000000"),
            (Answer::DevRebootTime(T::Cancelled), "02 ffffffff"),
            (Answer::DevRebootTime(T::InSeconds(120)), "02 78000000"),
            (Answer::DevRebootCountdown(C::Cancelled), "03 ffffff"),
            (Answer::DevRebootCountdown(C::InSeconds(3600)), "03 100e00"),
            (Answer::DevRebootCountdown(C::InSeconds(0)), "03 000000"),
            (Answer::DevUpgradeImage(ImageStatus::NoImage), "04 00"),
            (Answer::DevUpgradeImage(ImageStatus::Corrupt), "04 01"),
            (Answer::DevUpgradeImage(ImageStatus::WrongHardware), "04 02"),
            (valid([0x04, 0x03, 0x02, 0x01]), "04 03 04030201"),
            // ST SMARTDELTA: valid, version never set.
            (valid([0; 4]), "04 03 00000000"),
            (deleted(false, false), "05 00"),
            (deleted(true, false), "05 01"),
            (deleted(false, true), "05 02"),
            (deleted(true, true), "05 03"),
        ]
    }

    #[test]
    fn answers_both_ways() {
        for (ans, bytes) in answer_table() {
            assert_eq!(ans.to_vec().unwrap(), h(bytes), "{ans:?}");
            assert_eq!(Answer::from_slice(&h(bytes)), Ok(ans), "{bytes}");
            assert_eq!(parse_answers(&h(bytes)), Ok(vec![ans]), "{bytes}");
        }
    }

    #[test]
    fn several_answers_in_one_frame() {
        // Upgrade status (short form), then version, then countdown.
        let frame = h("04 02  01 04030201 00000000  03 3c0000");
        assert_eq!(
            parse_answers(&frame),
            Ok(vec![
                Answer::DevUpgradeImage(ImageStatus::WrongHardware),
                Answer::DevVersion {
                    firmware: RawVersion::from_u32_le(0x0102_0304),
                    hardware: RawVersion::from_u32_le(0),
                },
                Answer::DevRebootCountdown(RebootCountdownAnswer::InSeconds(60)),
            ])
        );
        // A valid image's version is part of its answer, not the next CID.
        assert_eq!(
            parse_answers(&h("04 03 05000000 05 00")),
            Ok(vec![
                Answer::DevUpgradeImage(ImageStatus::Valid {
                    next_firmware_version: RawVersion::from_u32_le(5)
                }),
                Answer::DevDeleteImage(DeleteImageResult::default()),
            ])
        );
    }

    #[test]
    fn rfu_bits_are_ignored() {
        assert_eq!(
            Answer::from_slice(&h("04 fc")),
            Ok(Answer::DevUpgradeImage(ImageStatus::NoImage))
        );
        assert_eq!(
            Answer::from_slice(&h("04 f3 01000000")),
            Ok(Answer::DevUpgradeImage(ImageStatus::Valid {
                next_firmware_version: RawVersion::from_u32_le(1)
            }))
        );
        assert_eq!(
            Answer::from_slice(&h("05 fd")),
            Ok(Answer::DevDeleteImage(DeleteImageResult {
                no_valid_image: true,
                invalid_version: false
            }))
        );
    }

    #[test]
    fn malformed_answers() {
        let short = |cid, command, needed, got| Error::TooShort {
            cid,
            command,
            needed,
            got,
        };
        let cases = [
            ("", Error::Empty),
            ("06", Error::UnknownCid { cid: 6 }),
            ("80 00", Error::UnknownCid { cid: 0x80 }),
            ("00 04", short(0, "PackageVersionAns", 2, 1)),
            ("00", short(0, "PackageVersionAns", 2, 0)),
            ("01 04030201 000000", short(1, "DevVersionAns", 8, 7)),
            ("02 0000", short(2, "DevRebootTimeAns", 4, 2)),
            ("03 ff", short(3, "DevRebootCountdownAns", 3, 1)),
            ("04", short(4, "DevUpgradeImageAns", 1, 0)),
            // Status 3 promises a version.
            ("04 03", short(4, "DevUpgradeImageAns", 5, 1)),
            ("04 03 010203", short(4, "DevUpgradeImageAns", 5, 4)),
            ("05", short(5, "DevDeleteImageAns", 1, 0)),
        ];
        for (bytes, err) in cases {
            assert_eq!(parse_answers(&h(bytes)), Err(err.clone()), "{bytes}");
            assert_eq!(Answer::from_slice(&h(bytes)), Err(err), "{bytes}");
        }
        // A good answer, then a bad one: the whole frame fails.
        let frames = [
            ("05 00 ee", Error::UnknownCid { cid: 0xee }),
            ("04 00 02 01", short(2, "DevRebootTimeAns", 4, 1)),
        ];
        for (bytes, err) in frames {
            assert_eq!(parse_answers(&h(bytes)), Err(err), "{bytes}");
        }
        let trailing = [
            ("00 04 01 00", "package_version"),
            ("04 01 00", "upgrade_image"),
            ("05 00 00", "delete_image"),
        ];
        for (bytes, command) in trailing {
            assert_eq!(
                Answer::from_slice(&h(bytes)),
                Err(Error::TrailingBytes { command, extra: 1 }),
                "{bytes}"
            );
        }
    }

    #[test]
    fn answer_values_that_do_not_fit_are_errors() {
        let countdown = Answer::DevRebootCountdown(RebootCountdownAnswer::InSeconds(0x00ff_ffff));
        assert_eq!(
            countdown.to_vec(),
            Err(Error::FieldOutOfRange {
                field: "countdown_s",
                value: 0x00ff_ffff,
                min: 0,
                max: MAX_COUNTDOWN_S
            })
        );
        for s in [0, u32::MAX] {
            assert!(matches!(
                Answer::DevRebootTime(RebootTimeAnswer::InSeconds(s)).to_vec(),
                Err(Error::FieldOutOfRange {
                    field: "seconds",
                    ..
                })
            ));
        }
    }

    #[test]
    fn version_readings() {
        // ST sends 1.2.3.4 as 01 02 03 04; LBM sends the u32 0x01020304 as 04 03 02 01.
        let st = RawVersion([1, 2, 3, 4]);
        let lbm = RawVersion([4, 3, 2, 1]);
        assert_eq!(st.dotted_msb_first(), "1.2.3.4");
        assert_eq!(lbm.dotted_le(), "1.2.3.4");
        assert_eq!(st.as_u32_msb_first(), 0x0102_0304);
        assert_eq!(lbm.as_u32_le(), 0x0102_0304);
        assert_eq!(st.as_u32_le(), 0x0403_0201);
        assert_eq!(st.hex(), "01020304");
        assert_eq!(
            RawVersion::from_u32_le(0xa0b0_c0d0).as_u32_le(),
            0xa0b0_c0d0
        );
    }

    #[test]
    fn answers_share_their_request_names() {
        let requests = request_table();
        for (ans, _) in answer_table() {
            let req = requests.iter().find(|(r, _)| r.cid() == ans.cid());
            assert_eq!(req.map(|(r, _)| r.command_name()), Some(ans.command_name()));
        }
        let names: Vec<&str> = requests.iter().map(|(r, _)| r.command_name()).collect();
        let api = [
            "package_version",
            "dev_version",
            "reboot_time",
            "reboot_countdown",
            "upgrade_image",
            "delete_image",
        ];
        assert!(api.iter().all(|n| names.contains(n)));
    }

    fn arb_version() -> impl Strategy<Value = RawVersion> {
        any::<[u8; 4]>().prop_map(RawVersion)
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        prop_oneof![
            Just(Request::PackageVersion),
            Just(Request::DevVersion),
            Just(Request::DevUpgradeImage),
            any::<u32>().prop_map(|v| Request::DevRebootTime(RebootTime::from_field(v))),
            (0u32..=0x00ff_ffff)
                .prop_map(|v| Request::DevRebootCountdown(RebootCountdown::from_field(v))),
            any::<u32>().prop_map(|version| Request::DevDeleteImage { version }),
        ]
    }

    fn arb_answer() -> impl Strategy<Value = Answer> {
        prop_oneof![
            any::<(u8, u8)>().prop_map(|(package_identifier, package_version)| {
                Answer::PackageVersion {
                    package_identifier,
                    package_version,
                }
            }),
            (arb_version(), arb_version())
                .prop_map(|(firmware, hardware)| Answer::DevVersion { firmware, hardware }),
            any::<u32>().prop_map(|v| Answer::DevRebootTime(match v {
                0 => RebootTimeAnswer::CannotReboot,
                u32::MAX => RebootTimeAnswer::Cancelled,
                s => RebootTimeAnswer::InSeconds(s),
            })),
            (0u32..=0x00ff_ffff).prop_map(|v| Answer::DevRebootCountdown(match v {
                COUNTDOWN_CANCEL => RebootCountdownAnswer::Cancelled,
                s => RebootCountdownAnswer::InSeconds(s),
            })),
            prop_oneof![
                Just(ImageStatus::NoImage),
                Just(ImageStatus::Corrupt),
                Just(ImageStatus::WrongHardware),
                arb_version().prop_map(|next_firmware_version| ImageStatus::Valid {
                    next_firmware_version
                }),
            ]
            .prop_map(Answer::DevUpgradeImage),
            any::<(bool, bool)>().prop_map(|(no_valid_image, invalid_version)| {
                Answer::DevDeleteImage(DeleteImageResult {
                    no_valid_image,
                    invalid_version,
                })
            }),
        ]
    }

    proptest! {
        #[test]
        fn decoders_never_panic(
            // Mostly valid CIDs, so the decoders get past the first byte.
            bytes in proptest::collection::vec(prop_oneof![0u8..7, any::<u8>()], 0..40)
        ) {
            let _ = Answer::from_slice(&bytes);
            let _ = parse_answers(&bytes);
            let _ = Request::from_slice(&bytes);
            let _ = parse_requests(&bytes);
        }

        #[test]
        fn request_round_trip(req in arb_request()) {
            let bytes = req.to_vec().unwrap();
            prop_assert_eq!(Request::from_slice(&bytes), Ok(req));
        }

        #[test]
        fn answer_round_trip(ans in arb_answer()) {
            let bytes = ans.to_vec().unwrap();
            prop_assert_eq!(Answer::from_slice(&bytes), Ok(ans));
        }

        #[test]
        fn answer_frames_round_trip(answers in proptest::collection::vec(arb_answer(), 1..6)) {
            let frame: Vec<u8> = answers.iter().flat_map(|a| a.to_vec().unwrap()).collect();
            prop_assert_eq!(parse_answers(&frame), Ok(answers));
        }

        #[test]
        fn request_frames_round_trip(reqs in proptest::collection::vec(arb_request(), 1..6)) {
            let frame: Vec<u8> = reqs.iter().flat_map(|r| r.to_vec().unwrap()).collect();
            prop_assert_eq!(parse_requests(&frame), Ok(reqs));
        }
    }
}
