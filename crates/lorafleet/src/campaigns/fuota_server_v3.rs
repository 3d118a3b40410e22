//! `fuota-server-v3`: campaigns carried by chirpstack-fuota-server v3 over its gRPC API
//! (`fuota.FUOTAServerService` at `fuota.server_v3.url`).
//!
//! The server runs the whole deployment itself: lorafleet sends every setting and each
//! device's McRootKey once, then polls the deployment status and the per-device logs. The
//! server reports, per step, when the deployment moved on and when each device answered; a
//! device that had not answered when the deployment moved on was dropped by the server, which
//! is how failures are recognised.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tonic::transport::{Channel, Endpoint};

use super::driver::{
    stage_from_steps, Campaign, CampaignDriver, DeviceReport, DriverContext, DriverError, Finished,
    LogLevel, LogLine, PollOutcome,
};
use super::{plan, DriverKind, FragStatusRequest, MulticastClass, Stage};
use crate::config::Config;

/// Generated from `proto/chirpstack-v3/fuota.proto`.
pub mod proto {
    #![allow(clippy::all)]
    tonic::include_proto!("fuota");
}

use proto::fuota_server_service_client::FuotaServerServiceClient;

pub struct FuotaServerV3Driver {
    url: String,
    application_id: i64,
    timeout: Duration,
}

/// Turns a gRPC status into a driver error, keeping the service's own message.
pub fn map_status(url: &str, status: tonic::Status) -> DriverError {
    use tonic::Code;
    let unreachable = match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => true,
        Code::Unknown => status.message().contains("transport error"),
        _ => false,
    };
    if unreachable {
        DriverError::Unavailable(format!(
            "cannot reach the FUOTA service at {url}: {}",
            status.message()
        ))
    } else {
        DriverError::Refused(format!(
            "the FUOTA service answered {:?}: {}",
            status.code(),
            status.message()
        ))
    }
}

fn ts(t: &Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let t = t.as_ref()?;
    DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
}

/// Builds the deployment exactly as the server expects it (enum numbering is v3's own).
pub fn deployment(
    campaign: &Campaign,
    application_id: i64,
) -> Result<proto::Deployment, DriverError> {
    let s = &campaign.settings;
    let mut devices = Vec::new();
    for d in &campaign.devices {
        let root = campaign.keys.root_key(&d.dev_eui, &s.lorawan_version).ok_or_else(
            || {
                DriverError::Invalid(format!(
                    "no key material for device {} (keys are kept only until the deployment is created)",
                    d.dev_eui
                ))
            },
        )?;
        devices.push(proto::DeploymentDevice {
            dev_eui: hex::decode(&d.dev_eui).map_err(|e| DriverError::Invalid(e.to_string()))?,
            mc_root_key: lorafleet_engine::keys::mc_root_key(root).to_vec(),
        });
    }
    Ok(proto::Deployment {
        application_id,
        devices,
        multicast_group_type: match s.multicast.class {
            MulticastClass::B => proto::MulticastGroupType::ClassB,
            MulticastClass::C => proto::MulticastGroupType::ClassC,
        } as i32,
        multicast_dr: u32::from(s.multicast.dr),
        multicast_ping_slot_period: u32::from(s.multicast.ping_slot_periodicity),
        multicast_frequency: s.multicast.frequency,
        multicast_group_id: u32::from(s.multicast.group_id),
        multicast_timeout: u32::from(s.multicast.timeout_exp),
        unicast_timeout: Some(prost_types::Duration {
            seconds: i64::from(s.unicast.timeout_s),
            nanos: 0,
        }),
        unicast_attempt_count: s.unicast.attempts,
        fragmentation_fragment_size: u32::from(s.fragmentation.fragment_size),
        payload: campaign.payload.to_vec(),
        fragmentation_redundancy: s.fragmentation.redundancy,
        fragmentation_session_index: u32::from(s.fragmentation.session_index),
        fragmentation_matrix: u32::from(s.fragmentation.matrix),
        fragmentation_block_ack_delay: u32::from(s.fragmentation.block_ack_delay),
        fragmentation_descriptor: s.descriptor().to_vec(),
        request_fragmentation_session_status: match s.request_frag_status {
            FragStatusRequest::AfterEnqueue => {
                proto::RequestFragmentationSessionStatus::AfterFragmentEnqueue
            }
            FragStatusRequest::AfterSession => {
                proto::RequestFragmentationSessionStatus::AfterSessionTimeout
            }
            FragStatusRequest::None => proto::RequestFragmentationSessionStatus::NoRequest,
        } as i32,
    })
}

fn deployment_id(campaign: &Campaign) -> Result<Vec<u8>, DriverError> {
    campaign
        .driver_state
        .as_ref()
        .and_then(|s| s.get("deployment_id"))
        .and_then(|v| v.as_str())
        .and_then(|h| hex::decode(h).ok())
        .ok_or_else(|| DriverError::Invalid("the campaign has no deployment id".into()))
}

/// Renders a UUID given as 16 bytes.
fn uuid_text(b: &[u8]) -> String {
    if b.len() != 16 {
        return hex::encode(b);
    }
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// What the server's log says about why a device did not get past its step.
fn failure_detail(logs: &[proto::DeploymentDeviceLog], answer: &str) -> Option<String> {
    let last = logs.iter().rev().find(|l| l.command == answer)?;
    let flags: Vec<String> = {
        let mut f: Vec<(&String, &String)> = last
            .fields
            .iter()
            .filter(|(_, v)| v.as_str() == "true")
            .collect();
        f.sort();
        f.into_iter().map(|(k, _)| k.replace('_', " ")).collect()
    };
    if let Some(missing) = last
        .fields
        .get("missing_frag")
        .filter(|m| m.as_str() != "0")
    {
        return Some(format!("{answer}: {missing} fragments missing"));
    }
    if flags.is_empty() {
        None
    } else {
        Some(format!("{answer}: {}", flags.join(", ")))
    }
}

fn log_line(dev_eui: &str, l: &proto::DeploymentDeviceLog) -> LogLine {
    let mut fields: Vec<(&String, &String)> = l.fields.iter().collect();
    fields.sort();
    let text: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let bad = l.fields.iter().any(|(k, v)| {
        (v.as_str() == "true" && k != "ans_required") || (k == "missing_frag" && v.as_str() != "0")
    });
    let at = ts(&l.created_at).unwrap_or_else(Utc::now);
    LogLine {
        at,
        level: if bad {
            LogLevel::Warning
        } else {
            LogLevel::Info
        },
        from_service: true,
        dev_eui: Some(dev_eui.to_string()),
        message: format!("{} (FPort {}) {}", l.command, l.f_port, text.join(" "))
            .trim_end()
            .to_string(),
        dedup_key: Some(format!(
            "{dev_eui}|{}|{}|{}",
            at.timestamp_micros(),
            l.command,
            text.join(",")
        )),
    }
}

impl FuotaServerV3Driver {
    pub fn new(config: &Config) -> Self {
        Self {
            url: config.fuota.server_v3.url.clone(),
            application_id: config.fuota.server_v3.application_id,
            timeout: Duration::from_secs(config.network.request_timeout_s.max(1)),
        }
    }

    fn client(&self) -> Result<FuotaServerServiceClient<Channel>, DriverError> {
        let endpoint = Endpoint::from_shared(self.url.clone())
            .map_err(|e| DriverError::Invalid(format!("fuota.server_v3.url {:?}: {e}", self.url)))?
            .connect_timeout(self.timeout)
            .timeout(self.timeout);
        // The payload of a large image exceeds tonic's 4 MiB default.
        Ok(FuotaServerServiceClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20))
    }

    /// Worst case for a deployment: every unicast step needs every attempt, plus the session.
    fn deadline(campaign: &Campaign) -> Option<DateTime<Utc>> {
        let s = &campaign.settings;
        let steps = 3 + u32::from(s.request_frag_status != FragStatusRequest::None);
        let worst = f64::from(steps * s.unicast.attempts * s.unicast.timeout_s)
            + plan::session_length_s(s.multicast.class, s.multicast.timeout_exp);
        // Generous margin: the server's own scheduling and the network's queues add delay.
        let margin = worst * 0.5 + 3600.0;
        campaign
            .started_at
            .map(|t| t + chrono::Duration::seconds((worst + margin) as i64))
    }
}

#[async_trait]
impl CampaignDriver for FuotaServerV3Driver {
    fn kind(&self) -> DriverKind {
        DriverKind::FuotaServerV3
    }

    async fn start(
        &self,
        _ctx: &DriverContext,
        campaign: &Campaign,
    ) -> Result<PollOutcome, DriverError> {
        let deployment = deployment(campaign, self.application_id)?;
        let mut client = self.client()?;
        let response = client
            .create_deployment(proto::CreateDeploymentRequest {
                deployment: Some(deployment),
            })
            .await
            .map_err(|s| map_status(&self.url, s))?
            .into_inner();
        let id = hex::encode(&response.id);
        let mut log = LogLine::info(format!(
            "deployment {} created on the FUOTA server at {} (application {})",
            uuid_text(&response.id),
            self.url,
            self.application_id
        ));
        log.from_service = false;
        Ok(PollOutcome {
            driver_state: Some(serde_json::json!({ "deployment_id": id })),
            log: vec![log],
            forget_keys: true,
            next_poll: Some(Duration::from_secs(1)),
            ..Default::default()
        })
    }

    async fn poll(
        &self,
        ctx: &DriverContext,
        campaign: &Campaign,
    ) -> Result<PollOutcome, DriverError> {
        let id = deployment_id(campaign)?;
        let mut client = self.client()?;
        let status = client
            .get_deployment_status(proto::GetDeploymentStatusRequest { id: id.clone() })
            .await
            .map_err(|s| map_status(&self.url, s))?
            .into_inner();
        let s = &campaign.settings;
        let requested = s.request_frag_status != FragStatusRequest::None;
        let mcg_done = status.mc_group_setup_completed_at.is_some();
        let fss_done = status.frag_session_setup_completed_at.is_some();
        let mcs_done = status.mc_session_completed_at.is_some();
        let enqueue_done = status.enqueue_completed_at.is_some();
        let status_done = status.frag_status_completed_at.is_some();
        // Without a status request nothing reports the end: the devices are done when the
        // session they were told about is over.
        let session_over = ts(&status.mc_session_completed_at).is_some_and(|t| {
            let len = plan::session_length_s(s.multicast.class, s.multicast.timeout_exp);
            ctx.now() >= t + chrono::Duration::seconds(len as i64)
        });
        let fragments_sent = if requested {
            enqueue_done
        } else {
            enqueue_done && session_over
        };

        let by_eui: HashMap<String, &proto::DeploymentDeviceStatus> = status
            .device_status
            .iter()
            .map(|d| (hex::encode(&d.dev_eui), d))
            .collect();
        let mut outcome = PollOutcome::default();
        for device in &campaign.devices {
            if device.stage.is_final() {
                outcome
                    .devices
                    .push(DeviceReport::new(device.dev_eui.clone(), device.stage));
                continue;
            }
            let Some(d) = by_eui.get(&device.dev_eui) else {
                outcome
                    .devices
                    .push(DeviceReport::new(device.dev_eui.clone(), device.stage));
                continue;
            };
            let logs = client
                .get_deployment_device_logs(proto::GetDeploymentDeviceLogsRequest {
                    deployment_id: id.clone(),
                    dev_eui: d.dev_eui.clone(),
                })
                .await
                .map_err(|s| map_status(&self.url, s))?
                .into_inner()
                .logs;
            outcome
                .log
                .extend(logs.iter().map(|l| log_line(&device.dev_eui, l)));

            let (mcg, fss, mcs, fst) = (
                d.mc_group_setup_completed_at.is_some(),
                d.frag_session_setup_completed_at.is_some(),
                d.mc_session_completed_at.is_some(),
                d.frag_status_completed_at.is_some(),
            );
            let session_answer = match s.multicast.class {
                MulticastClass::C => "McClassCSessionAns",
                MulticastClass::B => "McClassBSessionAns",
            };
            let failure = if mcg_done && !mcg {
                Some(failure_detail(&logs, "McGroupSetupAns").unwrap_or_else(|| {
                    format!("no McGroupSetupAns after {} attempts", s.unicast.attempts)
                }))
            } else if fss_done && mcg && !fss {
                Some(
                    failure_detail(&logs, "FragSessionSetupAns").unwrap_or_else(|| {
                        format!(
                            "no FragSessionSetupAns after {} attempts",
                            s.unicast.attempts
                        )
                    }),
                )
            } else if mcs_done && fss && !mcs {
                Some(failure_detail(&logs, session_answer).unwrap_or_else(|| {
                    format!("no {session_answer} after {} attempts", s.unicast.attempts)
                }))
            } else if requested && status_done && mcs && !fst {
                Some(
                    failure_detail(&logs, "FragSessionStatusAns")
                        .unwrap_or_else(|| "no complete FragSessionStatusAns".to_string()),
                )
            } else {
                None
            };
            let mut report = DeviceReport::new(
                device.dev_eui.clone(),
                if failure.is_some() {
                    Stage::Failed
                } else {
                    stage_from_steps(mcg, fss, mcs, fragments_sent, fst, requested)
                },
            );
            report.mc_group_setup_at = ts(&d.mc_group_setup_completed_at);
            report.frag_session_setup_at = ts(&d.frag_session_setup_completed_at);
            report.mc_session_setup_at = ts(&d.mc_session_completed_at);
            report.frag_status_at = ts(&d.frag_status_completed_at);
            report.error = failure;
            if report.stage == Stage::Completed {
                report.completed_at = report
                    .frag_status_at
                    .or_else(|| ts(&status.enqueue_completed_at))
                    .or(Some(ctx.now()));
            }
            outcome.devices.push(report);
        }

        if outcome.devices.iter().all(|d| d.stage.is_final()) {
            if !requested {
                outcome.log.push(LogLine::info(
                    "no fragmentation status was requested: completion is assumed at the end of the session, not confirmed by the devices",
                ));
            }
            outcome.finished = Some(super::driver::outcome_of(&outcome.devices));
        } else if Self::deadline(campaign).is_some_and(|d| ctx.now() > d) {
            outcome.finished = Some(Finished::Failed(
                "the deployment made no progress past its worst-case duration; a restart of chirpstack-fuota-server ends its running deployments".into(),
            ));
        }
        Ok(outcome)
    }

    async fn cancel(&self, _ctx: &DriverContext, _campaign: &Campaign) -> Result<(), DriverError> {
        Err(DriverError::Refused(
            "chirpstack-fuota-server v3 has no cancel call: the deployment runs to its end on the server; lorafleet stops following it".into(),
        ))
    }
}
