//! Pure codecs used by lorafleet: bytes in, typed values out, no I/O, no async.
//!
//! Modules:
//! - [`version_status`]: the LoRaWAN Version & Status application package
//!   (PackageIdentifier 10, FPort 111): request encoding, answer decoding that
//!   tolerates both known VersionStoredAns layouts, and version rendering.
//! - [`firmware_trailer`]: the 113-byte trailer at the end of a signed firmware
//!   package (signature, manufacturer / device-class UUIDs, version, delta info).
//! - [`firmware_management`]: the LoRa Alliance Firmware Management Protocol
//!   (TS006, FPort 203), both directions, for the server and simulated devices.
//! - [`fragmentation`]: the device side of TS004 v1 fragmentation, i.e. the FEC
//!   matrix line and an incremental GF(2) fragment decoder.
//! - [`frag_status`]: FragSessionStatusAns kept as received, read per device
//!   stack, and the parity a device still needs (adaptive parity).
//! - [`redundancy`]: redundancy advice and the code's measured overhead,
//!   obtained by running that decoder against simulated random loss.
//! - [`eui`]: the DevEUI type every crate names devices by.
//! - [`time`]: RFC 3339 rendering of Unix and GPS timestamps.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod eui;
pub mod firmware_management;
pub mod firmware_trailer;
pub mod frag_status;
pub mod fragmentation;
pub mod redundancy;
pub mod time;
pub mod version_status;
