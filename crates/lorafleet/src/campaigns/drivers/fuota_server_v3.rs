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

use super::{
    stage_from_steps, Campaign, CampaignDriver, DeviceReport, DriverContext, DriverError, Finished,
    LogLevel, LogLine, PollOutcome,
};
use crate::campaigns::{plan, DriverKind, FragStatusRequest, MulticastClass, Stage};
use crate::config::Config;
use crate::timestamp::to_utc;

/// Generated from `proto/chirpstack-v3/fuota.proto`.
pub mod proto {
    // Generated code, not ours to reshape: it is held to none of our lints.
    #![allow(clippy::all, clippy::pedantic, clippy::too_many_lines)]
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
    super::grpc_error("the FUOTA service", url, &status, "")
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
    let at = to_utc(l.created_at.as_ref()).unwrap_or_else(Utc::now);
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
    /// The server's log of one device in one deployment.
    async fn device_logs(
        &self,
        client: &mut FuotaServerServiceClient<Channel>,
        deployment_id: &[u8],
        dev_eui: &[u8],
    ) -> Result<Vec<proto::DeploymentDeviceLog>, DriverError> {
        Ok(client
            .get_deployment_device_logs(proto::GetDeploymentDeviceLogsRequest {
                deployment_id: deployment_id.to_vec(),
                dev_eui: dev_eui.to_vec(),
            })
            .await
            .map_err(|s| map_status(&self.url, s))?
            .into_inner()
            .logs)
    }

    /// Ends the campaign when every device is final, or when the server has gone quiet for
    /// longer than the deployment could take (it forgets running deployments on restart).
    fn conclude(
        &self,
        outcome: &mut PollOutcome,
        campaign: &Campaign,
        frag_status_requested: bool,
        now: DateTime<Utc>,
    ) {
        if outcome.devices.iter().all(|d| d.stage.is_final()) {
            if !frag_status_requested {
                outcome.log.push(LogLine::info(
                    "no fragmentation status was requested: completion is assumed at the end of the session, not confirmed by the devices",
                ));
            }
            outcome.finished = Some(super::outcome_of(&outcome.devices));
        } else if Self::deadline(campaign).is_some_and(|d| now > d) {
            outcome.finished = Some(Finished::Failed(
                "the deployment made no progress past its worst-case duration; a restart of chirpstack-fuota-server ends its running deployments".into(),
            ));
        }
    }

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
        Ok(PollOutcome::started(
            serde_json::json!({ "deployment_id": id }),
            vec![log],
        ))
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
        let progress = DeploymentProgress::of(&status, campaign, ctx.now());
        let by_eui: HashMap<String, &proto::DeploymentDeviceStatus> = status
            .device_status
            .iter()
            .map(|d| (hex::encode(&d.dev_eui), d))
            .collect();
        let mut outcome = PollOutcome::default();
        for device in &campaign.devices {
            // Final devices and devices the server does not report keep the stage they have.
            let found = by_eui
                .get(&device.dev_eui)
                .filter(|_| !device.stage.is_final());
            let Some(d) = found else {
                outcome
                    .devices
                    .push(DeviceReport::new(device.dev_eui.clone(), device.stage));
                continue;
            };
            let logs = self.device_logs(&mut client, &id, &d.dev_eui).await?;
            outcome
                .log
                .extend(logs.iter().map(|l| log_line(&device.dev_eui, l)));
            let failure = failure_of(d, &logs, &progress, s.unicast.attempts, s.multicast.class);
            let mut report = device_report(&device.dev_eui, d, failure, &progress);
            if report.stage == Stage::Completed {
                report.completed_at = report
                    .frag_status_at
                    .or_else(|| to_utc(status.enqueue_completed_at.as_ref()))
                    .or(Some(ctx.now()));
            }
            outcome.devices.push(report);
        }
        self.conclude(
            &mut outcome,
            campaign,
            progress.frag_status_requested,
            ctx.now(),
        );
        Ok(outcome)
    }

    async fn cancel(&self, _ctx: &DriverContext, _campaign: &Campaign) -> Result<(), DriverError> {
        Err(DriverError::Refused(
            "chirpstack-fuota-server v3 has no cancel call: the deployment runs to its end on the server; lorafleet stops following it".into(),
        ))
    }
}

/// Which of its steps the server has moved past for the deployment as a whole: a device that
/// had not answered a step by then was dropped.
#[derive(Debug, Clone, Copy, Default)]
struct DeploymentProgress {
    mc_group_setup_done: bool,
    frag_session_setup_done: bool,
    mc_session_done: bool,
    frag_status_done: bool,
    /// The fragments are out; without a status request, only once the session is over.
    fragments_sent: bool,
    frag_status_requested: bool,
}

impl DeploymentProgress {
    fn of(
        status: &proto::GetDeploymentStatusResponse,
        campaign: &Campaign,
        now: DateTime<Utc>,
    ) -> Self {
        let s = &campaign.settings;
        let requested = s.request_frag_status != FragStatusRequest::None;
        let enqueue_done = status.enqueue_completed_at.is_some();
        // Without a status request nothing reports the end: the devices are done when the
        // session they were told about is over.
        let session_over = to_utc(status.mc_session_completed_at.as_ref()).is_some_and(|t| {
            let len = plan::session_length_s(s.multicast.class, s.multicast.timeout_exp);
            now >= t + chrono::Duration::seconds(len as i64)
        });
        Self {
            mc_group_setup_done: status.mc_group_setup_completed_at.is_some(),
            frag_session_setup_done: status.frag_session_setup_completed_at.is_some(),
            mc_session_done: status.mc_session_completed_at.is_some(),
            frag_status_done: status.frag_status_completed_at.is_some(),
            fragments_sent: if requested {
                enqueue_done
            } else {
                enqueue_done && session_over
            },
            frag_status_requested: requested,
        }
    }
}

/// Why the server dropped a device, if it did: the first step the deployment moved past
/// without the device's answer, in the words of the device's last answer when there is one.
fn failure_of(
    d: &proto::DeploymentDeviceStatus,
    logs: &[proto::DeploymentDeviceLog],
    progress: &DeploymentProgress,
    attempts: u32,
    class: MulticastClass,
) -> Option<String> {
    let (mcg, fss, mcs, fst) = (
        d.mc_group_setup_completed_at.is_some(),
        d.frag_session_setup_completed_at.is_some(),
        d.mc_session_completed_at.is_some(),
        d.frag_status_completed_at.is_some(),
    );
    let missing = |answer: &str| {
        failure_detail(logs, answer)
            .unwrap_or_else(|| format!("no {answer} after {attempts} attempts"))
    };
    let session_answer = match class {
        MulticastClass::C => "McClassCSessionAns",
        MulticastClass::B => "McClassBSessionAns",
    };
    if progress.mc_group_setup_done && !mcg {
        Some(missing("McGroupSetupAns"))
    } else if progress.frag_session_setup_done && mcg && !fss {
        Some(missing("FragSessionSetupAns"))
    } else if progress.mc_session_done && fss && !mcs {
        Some(missing(session_answer))
    } else if progress.frag_status_requested && progress.frag_status_done && mcs && !fst {
        Some(
            failure_detail(logs, "FragSessionStatusAns")
                .unwrap_or_else(|| "no complete FragSessionStatusAns".to_string()),
        )
    } else {
        None
    }
}

/// A device's report from the server's status of it (its completion time is set by the caller).
fn device_report(
    dev_eui: &str,
    d: &proto::DeploymentDeviceStatus,
    failure: Option<String>,
    progress: &DeploymentProgress,
) -> DeviceReport {
    let stage = if failure.is_some() {
        Stage::Failed
    } else {
        stage_from_steps(
            d.mc_group_setup_completed_at.is_some(),
            d.frag_session_setup_completed_at.is_some(),
            d.mc_session_completed_at.is_some(),
            progress.fragments_sent,
            d.frag_status_completed_at.is_some(),
            progress.frag_status_requested,
        )
    };
    let mut report = DeviceReport::new(dev_eui.to_string(), stage);
    report.mc_group_setup_at = to_utc(d.mc_group_setup_completed_at.as_ref());
    report.frag_session_setup_at = to_utc(d.frag_session_setup_completed_at.as_ref());
    report.mc_session_setup_at = to_utc(d.mc_session_completed_at.as_ref());
    report.frag_status_at = to_utc(d.frag_status_completed_at.as_ref());
    report.error = failure;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    #[test]
    fn a_device_fails_at_the_first_step_the_deployment_passed_without_it() {
        let mut progress = DeploymentProgress {
            mc_group_setup_done: true,
            ..Default::default()
        };
        let mut d = proto::DeploymentDeviceStatus::default();
        let fail = |d: &proto::DeploymentDeviceStatus, p: &DeploymentProgress| {
            failure_of(d, &[], p, 3, MulticastClass::B)
        };
        assert_eq!(
            fail(&d, &progress).as_deref(),
            Some("no McGroupSetupAns after 3 attempts")
        );
        d.mc_group_setup_completed_at = at(1);
        assert_eq!(fail(&d, &progress), None);
        progress.frag_session_setup_done = true;
        assert_eq!(
            fail(&d, &progress).as_deref(),
            Some("no FragSessionSetupAns after 3 attempts")
        );
        d.frag_session_setup_completed_at = at(2);
        progress.mc_session_done = true;
        assert_eq!(
            fail(&d, &progress).as_deref(),
            Some("no McClassBSessionAns after 3 attempts")
        );
        d.mc_session_completed_at = at(3);
        progress.frag_status_done = true;
        // The status step counts only when the campaign asked for it.
        assert_eq!(fail(&d, &progress), None);
        progress.frag_status_requested = true;
        assert_eq!(
            fail(&d, &progress).as_deref(),
            Some("no complete FragSessionStatusAns")
        );
        d.frag_status_completed_at = at(4);
        assert_eq!(fail(&d, &progress), None);
    }

    #[test]
    fn a_failed_device_is_reported_failed_with_its_reason() {
        let d = proto::DeploymentDeviceStatus {
            mc_group_setup_completed_at: at(1),
            ..Default::default()
        };
        let progress = DeploymentProgress::default();
        let r = device_report("0102", &d, Some("why".into()), &progress);
        assert_eq!((r.stage, r.error.as_deref()), (Stage::Failed, Some("why")));
        assert_eq!(r.mc_group_setup_at.map(|t| t.timestamp()), Some(1));
        let r = device_report("0102", &d, None, &progress);
        assert_eq!(
            r.stage,
            stage_from_steps(true, false, false, false, false, false)
        );
        assert_eq!(r.error, None);
    }
}
