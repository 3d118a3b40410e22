//! lorafleet's own implementation of the LoRa Alliance FUOTA packages: TS003 clock sync, TS005
//! remote multicast setup and TS004 fragmented data block transport (all v1), shared by the
//! engine that sends them and the simulated devices that answer them.

/// The packages' default FPorts; the simulated devices listen on these, the engine sends on them.
pub mod ports {
    /// TS005 Remote Multicast Setup.
    pub const MULTICAST_SETUP: u8 = 200;
    /// TS004 Fragmented Data Block Transport.
    pub const FRAGMENTATION: u8 = 201;
    /// TS003 Application Layer Clock Sync.
    pub const CLOCK_SYNC: u8 = 202;
}

/// PackageIdentifiers answered in PackageVersionAns.
pub mod package {
    pub const CLOCK_SYNC: u8 = 1;
    pub const MULTICAST_SETUP: u8 = 2;
    pub const FRAGMENTATION: u8 = 3;
}
