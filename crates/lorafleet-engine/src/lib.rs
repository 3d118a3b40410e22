//! lorafleet's own FUOTA engine, without I/O: what to send to whom and when, and what the
//! answers mean. The server feeds it the clock and the devices' answers and carries out the
//! actions it returns; the simulated devices use the same commands and keys from the other end.
//!
//! - [`adaptive`]: adaptive parity, sent in groups while a device still needs it.
//! - [`machine`]: the campaign state machine ([`machine::Run`], one [`machine::Dev`] per device).
//! - [`commands`]: TS005 / TS004 / Version & Status requests and the parsing of answers.
//! - [`packages`]: which package version and FPort each device speaks, and what it can hold.
//! - [`sessions`]: which devices can share one multicast session (a mixed fleet runs several).
//! - [`keys`]: the one TS005 key derivation, server and device side.
//! - [`clock_sync`]: the answer to a TS003 AppTimeReq.
//! - [`airtime`]: how long a frame occupies the air.
#![forbid(unsafe_code)]

pub mod adaptive;
pub mod airtime;
pub mod clock_sync;
pub mod commands;
pub mod keys;
pub mod machine;
pub mod packages;
pub mod sessions;

pub use commands::MulticastClass;
pub use lorafleet_codec::eui::DevEui;

/// The packages' default FPorts: the simulated devices listen on these; the engine sends on
/// each device's own ([`packages::Packages`]), these unless a layer says otherwise.
pub mod ports {
    /// TS005 Remote Multicast Setup.
    pub const MULTICAST_SETUP: u8 = 200;
    /// TS004 Fragmented Data Block Transport.
    pub const FRAGMENTATION: u8 = 201;
    /// TS003 Application Layer Clock Sync.
    pub const CLOCK_SYNC: u8 = 202;
    /// TS006 Firmware Management.
    pub const FIRMWARE_MANAGEMENT: u8 = 203;
}

/// PackageIdentifiers answered in PackageVersionAns.
pub mod package {
    pub const CLOCK_SYNC: u8 = 1;
    pub const MULTICAST_SETUP: u8 = 2;
    pub const FRAGMENTATION: u8 = 3;
}
