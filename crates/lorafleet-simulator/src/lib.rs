//! A LoRaWAN network server and a fleet of virtual devices, for trying lorafleet without a
//! ChirpStack and for testing its FUOTA engine against devices that answer for real.
//!
//! The devices (`device.rs`) implement the device side of Version & Status, TS003, TS005 and
//! TS004 (with the codec's FEC decoder), install a rebuilt image whose signed trailer they
//! recognise and reboot into it. The world (`world.rs`) plays radio and network server on the
//! simulation's own clock (`clock.rs`), accelerated by `time_scale`, and keeps its state on disk
//! (`store.rs`). A [`Simulation`] runs it and reports what happens, in its own words
//! ([`SimEvent`]), to an [`EventSink`]; its methods are the network server's API.
//!
//! The crate knows nothing of lorafleet's server: no database, no HTTP. lorafleet's adapter
//! (`lorafleet::network::simulated`) offers a [`Simulation`] as a network and is its sink.

pub mod class_b;
pub mod clock;
pub mod config;
pub mod demo;
pub mod device;
pub mod events;
pub mod firmware_management;
pub mod radio;
pub mod simulation;
pub mod stacks;
pub mod store;
pub mod world;

pub use config::{SimulatedConfig, SimulatedDeviceOverride};
pub use events::{EventSink, FleetDevice, SimEvent, SimEventBody, SimUplink, SinkError};
pub use simulation::{Setup, Simulation};
pub use world::{GroupSpec, SimError};
