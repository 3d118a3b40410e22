//! `network.kind = "simulated"`: the simulated network of `lorafleet-simulator` (a network
//! server and a fleet of virtual devices inside lorafleet, so a fresh install shows a living
//! fleet and a campaign can be tried without a ChirpStack), offered as a [`Network`].
//!
//! This adapter is the simulation's event sink: what the simulation reports is committed
//! through the ingest [`Writer`], exactly like ChirpStack's integration events, so everything
//! downstream (device pages, Version & Status answers, the FUOTA engine) cannot tell the
//! difference. The simulation's clock control is the simulator's own business.

use std::collections::BTreeMap;
use std::ops::Deref;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{DeviceKeys, Downlink, Enqueued, MulticastGroup, Network, NetworkError, RemoteDevice};
use crate::config::{Config, NetworkKind};
use crate::ingest::writer::Writer;
use crate::ingest::{DeviceIdentity, EventBody, IntegrationEvent, Uplink};
use lorafleet_codec::eui::DevEui;
use lorafleet_simulator::events::{APPLICATION_ID, APPLICATION_NAME};
use lorafleet_simulator::{
    EventSink, FleetDevice, GroupSpec, Setup, SimError, SimEvent, SimEventBody, Simulation,
    SinkError,
};

/// The simulation as lorafleet's network; derefs to the [`Simulation`] for what tests and
/// benchmarks look at (devices, restarts).
pub struct Simulated {
    sim: Simulation,
}

impl Simulated {
    /// Loads (or creates) the fleet from `<data_dir>/simulated`; nothing runs until
    /// [`Simulated::start`].
    pub fn new(config: &Config) -> anyhow::Result<Simulated> {
        let region = crate::config::parse_region(&config.network.region)
            .ok_or_else(|| anyhow::anyhow!("network.region {:?}", config.network.region))?;
        let sim = Simulation::open(&Setup {
            config: &config.network.simulated,
            region,
            status_port: config.status_protocol.f_port,
            data_dir: &config.server.data_dir,
            firmware_dir: &config.firmware.dir,
        })?;
        Ok(Simulated { sim })
    }

    /// Starts the simulation with the writer its events are committed with.
    pub fn start(&self, writer: Writer) {
        self.sim.start(WriterSink(writer));
    }
}

impl Deref for Simulated {
    type Target = Simulation;

    fn deref(&self) -> &Simulation {
        &self.sim
    }
}

/// Commits the simulation's events through the ingest writer, in order.
struct WriterSink(Writer);

#[async_trait]
impl EventSink for WriterSink {
    async fn deliver(&self, events: Vec<SimEvent>) -> Result<(), SinkError> {
        // Submitted in order without waiting for each, the events share group commits; the
        // last one's outcome says the whole batch is in the database.
        let mut last = None;
        for event in events {
            let done = self
                .0
                .submit(integration_event(event))
                .await
                .map_err(|_| SinkError::Closed)?;
            last = Some(done);
        }
        match last {
            Some(done) => match done.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(SinkError::Failed(e)),
                Err(_) => Err(SinkError::Closed),
            },
            None => Ok(()),
        }
    }
}

fn integration_event(e: SimEvent) -> IntegrationEvent {
    let body = match e.body {
        SimEventBody::Join => EventBody::Join,
        SimEventBody::Up(u) => EventBody::Up(Uplink {
            received_at: e.at,
            f_cnt: Some(u.f_cnt),
            f_port: Some(u.f_port),
            dr: Some(u.dr),
            frequency: Some(u.frequency),
            rssi: Some(u.rssi),
            snr: Some(u.snr),
            gateway_count: u.gateway_count,
            gateway_ids: Vec::new(),
            confirmed: false,
            data: u.data,
            object: u.object,
            // The simulation hands each frame over exactly once (no integration post to
            // repeat), and its frame counters restart with a device: no key, so never a repeat.
            dedup_key: None,
        }),
        SimEventBody::TxAck { queue_item_id } => EventBody::TxAck {
            f_cnt: None,
            queue_item_id: Some(queue_item_id),
        },
        SimEventBody::Status {
            battery_percent,
            margin,
        } => EventBody::DeviceStatus {
            battery: Some(battery_percent),
            external_power: false,
            margin: Some(margin),
        },
    };
    IntegrationEvent {
        dev_eui: e.dev_eui,
        at: e.at,
        device: e.device.as_ref().map(identity).unwrap_or_default(),
        body,
    }
}

fn identity(d: &FleetDevice) -> DeviceIdentity {
    DeviceIdentity {
        name: Some(d.name.clone()),
        application_id: Some(APPLICATION_ID.to_string()),
        application_name: Some(APPLICATION_NAME.to_string()),
        device_profile_id: Some(d.model.to_string()),
        device_profile_name: Some(format!("Simulated {}", d.model)),
        tags: Some(BTreeMap::from([
            ("simulated".to_string(), "true".to_string()),
            // The operator's name for the model, the one `model=` filters by.
            ("model".to_string(), format!("sim-{}", d.model)),
        ])),
        dev_addr: Some(hex::encode(d.dev_addr)),
    }
}

fn remote_device(d: FleetDevice) -> RemoteDevice {
    RemoteDevice {
        dev_eui: d.dev_eui,
        name: d.name,
        application_id: APPLICATION_ID.to_string(),
        application_name: Some(APPLICATION_NAME.to_string()),
        device_profile_id: Some(d.model.to_string()),
        device_profile_name: Some(format!("Simulated {}", d.model)),
        last_seen: None,
    }
}

fn group_spec(g: &MulticastGroup) -> GroupSpec {
    GroupSpec {
        name: g.name.clone(),
        mc_addr: g.mc_addr,
        mc_nwk_s_key: g.mc_nwk_s_key,
        mc_app_s_key: g.mc_app_s_key,
        f_cnt: g.f_cnt,
        class: g.class,
        dr: g.dr,
        frequency: g.frequency,
    }
}

impl From<SimError> for NetworkError {
    fn from(e: SimError) -> NetworkError {
        match e {
            SimError::UnknownDevice(_) => NetworkError::UnknownDevice(e.to_string()),
            SimError::NoGroup(_) => NetworkError::Refused(e.to_string()),
        }
    }
}

#[async_trait]
impl Network for Simulated {
    fn kind(&self) -> NetworkKind {
        NetworkKind::Simulated
    }

    fn now(&self) -> DateTime<Utc> {
        self.sim.now()
    }

    fn peek_now(&self) -> DateTime<Utc> {
        self.sim.peek_now()
    }

    fn time_scale(&self) -> f64 {
        self.sim.time_scale()
    }

    fn hold_clock_at(&self, caller: u64, at: Option<DateTime<Utc>>) {
        self.sim.hold_clock_at(caller, at);
    }

    fn clock_stands_after_request(&self) -> std::time::Duration {
        lorafleet_simulator::clock::LORAFLEET_GRACE
    }

    async fn enqueue(&self, downlink: &Downlink) -> Result<Enqueued, NetworkError> {
        let id = self
            .sim
            .enqueue(downlink.dev_eui, downlink.f_port, &downlink.data)
            .await?;
        Ok(Enqueued {
            network_ref: Some(id),
            f_cnt: None,
        })
    }

    async fn enqueue_all(&self, downlinks: &[Downlink]) -> Vec<Result<Enqueued, NetworkError>> {
        let items: Vec<_> = downlinks
            .iter()
            .map(|d| (d.dev_eui, d.f_port, d.data.as_slice()))
            .collect();
        match self.sim.enqueue_all(&items).await {
            Ok(ids) => ids
                .into_iter()
                .map(|r| {
                    r.map(|id| Enqueued {
                        network_ref: Some(id),
                        f_cnt: None,
                    })
                    .map_err(NetworkError::from)
                })
                .collect(),
            Err(e) => {
                let e = NetworkError::from(e).to_string();
                downlinks
                    .iter()
                    .map(|_| Err(NetworkError::Other(e.clone())))
                    .collect()
            }
        }
    }

    async fn list_devices(&self) -> Result<Vec<RemoteDevice>, NetworkError> {
        Ok(self.sim.devices().into_iter().map(remote_device).collect())
    }

    async fn device_keys(&self, dev_eui: DevEui) -> Result<Option<DeviceKeys>, NetworkError> {
        Ok(self.sim.gen_app_key(dev_eui).map(|key| DeviceKeys {
            gen_app_key: Some(key),
            app_key: None,
        }))
    }

    async fn create_multicast_group(&self, group: &MulticastGroup) -> Result<String, NetworkError> {
        Ok(self.sim.create_group(&group_spec(group)).await?)
    }

    async fn add_multicast_device(
        &self,
        group_id: &str,
        dev_eui: DevEui,
    ) -> Result<(), NetworkError> {
        Ok(self.sim.add_member(group_id, dev_eui).await?)
    }

    async fn add_multicast_devices(
        &self,
        group_id: &str,
        dev_euis: &[DevEui],
    ) -> Vec<Result<(), NetworkError>> {
        match self.sim.add_members(group_id, dev_euis).await {
            Ok(each) => each
                .into_iter()
                .map(|r| r.map_err(NetworkError::from))
                .collect(),
            Err(e) => {
                let e = NetworkError::from(e).to_string();
                dev_euis
                    .iter()
                    .map(|_| Err(NetworkError::Other(e.clone())))
                    .collect()
            }
        }
    }

    async fn enqueue_multicast(
        &self,
        group_id: &str,
        f_port: u8,
        data: &[u8],
    ) -> Result<u32, NetworkError> {
        Ok(self.sim.enqueue_multicast(group_id, f_port, data).await?)
    }

    async fn multicast_queue_len(&self, group_id: &str) -> Result<usize, NetworkError> {
        Ok(self.sim.multicast_queue_len(group_id)?)
    }

    async fn delete_multicast_group(&self, group_id: &str) -> Result<(), NetworkError> {
        Ok(self.sim.delete_group(group_id).await?)
    }

    /// Each stack of the fleet is a device profile: TS004 and TS005 in the version the stack
    /// speaks, on the default FPorts, so the engine speaks v2 to `lora-basics-modem` devices
    /// as it would to a ChirpStack profile saying so. No TS003 in the profile: nobody but
    /// lorafleet answers the simulated devices' AppTimeReq (whose v1 and v2 layouts agree).
    async fn device_profile_packages(
        &self,
        dev_eui: DevEui,
    ) -> Result<Option<super::app_layer::ProfilePackages>, NetworkError> {
        Ok(self.sim.stack_of(dev_eui).map(|stack| {
            let v = stack.package_version();
            super::app_layer::ProfilePackages {
                profile_id: format!("simulated-{}", stack.name()),
                profile_name: stack.name().to_string(),
                clock_sync: None,
                fragmentation: Some((v, lorafleet_engine::ports::FRAGMENTATION)),
                multicast_setup: Some((v, lorafleet_engine::ports::MULTICAST_SETUP)),
                uplink_interval_s: None,
            }
        }))
    }
}
