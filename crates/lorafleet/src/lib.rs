//! lorafleet: a server and web console for LoRaWAN device fleets on ChirpStack, with firmware
//! updates over the air.
//!
//! How an uplink flows: ChirpStack's HTTP integration posts to [`web::ingest`], which decodes
//! the body ([`ingest`]) into an [`ingest::IntegrationEvent`]; the [`ingest::writer`] commits it
//! ([`devices::record`] through [`storage`], and [`version_status`] for Version & Status answers) and announces the change,
//! which the console receives over server-sent events.
#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod campaigns;
pub mod cluster;
pub mod config;
pub mod devices;
pub mod engine;
pub mod firmware;
pub mod firmware_management;
pub mod ingest;
pub mod metrics;
pub mod network;
pub mod server;
pub mod storage;
pub mod timestamp;
pub mod version_status;
pub mod web;

pub use app::{App, AppState};
