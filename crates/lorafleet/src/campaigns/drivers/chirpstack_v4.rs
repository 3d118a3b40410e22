//! `chirpstack-v4`: campaigns carried by ChirpStack's built-in FUOTA service (>= 4.12,
//! `api.FuotaService`), at `network.chirpstack_v4.api_url` with its API key.
//!
//! ChirpStack holds the device keys and derives each McRootKey itself, so lorafleet reads the
//! keys only to check them (an empty GenAppKey is stored as zeros and accepted without
//! complaint; devices would then fail the McGroupSetup). Every device of one deployment must
//! share its device profile, so a campaign becomes one deployment per (application, profile),
//! shown as one campaign.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chirpstack_api::api;
use chirpstack_api::api::device_service_client::DeviceServiceClient;
use chirpstack_api::api::fuota_service_client::FuotaServiceClient;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use super::chirpstack_v4_jobs as jobs;
use super::{
    outcome_of, Campaign, CampaignDriver, DeviceReport, DriverContext, DriverError, Finished,
    LogLevel, LogLine, PollOutcome,
};
use crate::campaigns::validate::FieldError;
use crate::campaigns::{plan, DeviceKey, DriverKind, FragStatusRequest, MulticastClass, Stage};
use crate::config::Config;
use crate::network::chirpstack_v4::Client;
use crate::timestamp::to_utc;

pub struct ChirpstackV4Driver {
    /// The API client shared with the network backend, or why there is none.
    client: Result<Client, String>,
    application_id: String,
    device_profile_id: String,
    /// How long past its run time a job not run again means ChirpStack has stalled.
    stall_after: chrono::Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub application_id: String,
    pub device_profile_id: String,
    pub devices: Vec<String>,
}

/// Devices by the (application, device profile) their deployment needs.
type Groups = BTreeMap<(String, String), Vec<String>>;

/// (application, device profile) by DevEUI, as ChirpStack holds them.
type Registered = BTreeMap<String, (String, String)>;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct State {
    deployments: Vec<Deployment>,
}

/// ChirpStack's copy of a device's key, or what is wrong with it.
fn held_key(text: &str) -> Result<[u8; 16], String> {
    if text.trim().is_empty() {
        return Err("empty".into());
    }
    match lorafleet_engine::keys::parse_key(text) {
        Ok(k) if k == [0; 16] => Err("all zeros".into()),
        Ok(k) => Ok(k),
        Err(e) => Err(format!("not a key ({e})")),
    }
}

fn state_of(campaign: &Campaign) -> State {
    campaign
        .driver_state
        .clone()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

impl ChirpstackV4Driver {
    pub fn new(config: &Config, client: Result<Client, String>) -> Self {
        Self {
            client,
            application_id: config.fuota.chirpstack_v4.application_id.clone(),
            device_profile_id: config.fuota.chirpstack_v4.device_profile_id.clone(),
            stall_after: chrono::Duration::seconds(
                i64::try_from(config.fuota.chirpstack_v4.stall_after_s).unwrap_or(i64::MAX),
            ),
        }
    }

    fn client(&self) -> Result<&Client, DriverError> {
        self.client
            .as_ref()
            .map_err(|e| DriverError::Invalid(e.clone()))
    }

    fn channel(&self) -> Result<Channel, DriverError> {
        Ok(self.client()?.channel())
    }

    fn fuota(&self) -> Result<FuotaServiceClient<Channel>, DriverError> {
        Ok(FuotaServiceClient::new(self.channel()?)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20))
    }

    /// A request with ChirpStack's API key in the metadata.
    fn request<T>(&self, message: T) -> Result<tonic::Request<T>, DriverError> {
        Ok(self.client()?.request(message))
    }

    fn map_status(&self, status: tonic::Status) -> DriverError {
        let hint = match status.code() {
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                " (check network.chirpstack_v4.api_token)"
            }
            _ => "",
        };
        let url = self.client.as_ref().map_or("?", |c| c.url());
        super::grpc_error("ChirpStack", url, &status, hint)
    }

    /// Each device's (application, device profile) as ChirpStack holds them now
    /// (`DeviceService.Get`): the inventory's copy comes from the last uplink and goes stale
    /// when a device moves to another profile, and a deployment on the stale one is refused.
    /// Devices ChirpStack does not know come back as field errors.
    async fn registered(
        &self,
        campaign: &Campaign,
    ) -> Result<(Registered, Vec<FieldError>), DriverError> {
        let mut client = DeviceServiceClient::new(self.channel()?);
        let mut found = Registered::new();
        let mut errors = Vec::new();
        for d in &campaign.devices {
            let request = self.request(api::GetDeviceRequest {
                dev_eui: d.dev_eui.clone(),
            })?;
            match client.get(request).await {
                Ok(r) => {
                    if let Some(dev) = r.into_inner().device {
                        found.insert(
                            d.dev_eui.clone(),
                            (dev.application_id, dev.device_profile_id),
                        );
                    }
                }
                Err(s) if s.code() == tonic::Code::NotFound => errors.push(FieldError {
                    field: "devices".into(),
                    error: format!(
                        "ChirpStack has no device {} ({}); add it in ChirpStack or leave it out",
                        d.dev_eui,
                        s.message()
                    ),
                }),
                // A ChirpStack without the call: the inventory's copy is all there is.
                Err(s) if s.code() == tonic::Code::Unimplemented => {}
                Err(s) => return Err(self.map_status(s)),
            }
        }
        Ok((found, errors))
    }

    /// Each device profile of the campaign without TS004 or TS005, read from ChirpStack.
    async fn profile_errors(&self, campaign: &Campaign) -> Result<Vec<FieldError>, DriverError> {
        let euis: Vec<String> = campaign.devices.iter().map(|d| d.dev_eui.clone()).collect();
        let problems = crate::network::app_layer::fuota_profile_problems(self.client()?, &euis)
            .await
            .map_err(|e| match e {
                crate::network::NetworkError::Timeout(_)
                | crate::network::NetworkError::Unreachable { .. } => {
                    DriverError::Unavailable(e.to_string())
                }
                e => DriverError::Refused(e.to_string()),
            })?;
        Ok(problems
            .into_iter()
            .map(|error| FieldError {
                field: "devices".into(),
                error,
            })
            .collect())
    }

    /// Devices grouped by the (application, device profile) their deployment needs; devices
    /// whose profile is unknown come back separately. The configured ids win, then ChirpStack's
    /// record, then the inventory's.
    fn groups(&self, campaign: &Campaign, registered: &Registered) -> (Groups, Vec<String>) {
        let mut groups: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        let mut unknown = Vec::new();
        for d in &campaign.devices {
            let inv = campaign.inventory.iter().find(|k| k.dev_eui == d.dev_eui);
            let held = registered.get(&d.dev_eui);
            let pick = |configured: &str, held: Option<&String>, known: Option<&String>| {
                Some(configured.to_string())
                    .filter(|v| !v.is_empty())
                    .or_else(|| held.filter(|v| !v.is_empty()).cloned())
                    .or_else(|| known.cloned())
                    .filter(|v| !v.is_empty())
            };
            let profile = pick(
                &self.device_profile_id,
                held.map(|h| &h.1),
                inv.and_then(|k| k.device_profile_id.as_ref()),
            );
            let app = pick(
                &self.application_id,
                held.map(|h| &h.0),
                inv.and_then(|k| k.application_id.as_ref()),
            );
            match (app, profile) {
                (Some(a), Some(p)) => groups.entry((a, p)).or_default().push(d.dev_eui.clone()),
                _ => unknown.push(d.dev_eui.clone()),
            }
        }
        (groups, unknown)
    }

    /// The deployment message for one group (v4's enum numbering differs from v3's).
    pub fn deployment_message(
        campaign: &Campaign,
        application_id: &str,
        device_profile_id: &str,
        name: String,
    ) -> api::FuotaDeployment {
        let s = &campaign.settings;
        let (m, _) = plan::fragments_for(
            campaign.payload.len(),
            usize::from(s.fragmentation.fragment_size),
        );
        let (_, pct) = plan::effective_redundancy(s, DriverKind::ChirpstackV4, m);
        api::FuotaDeployment {
            id: String::new(),
            application_id: application_id.to_string(),
            device_profile_id: device_profile_id.to_string(),
            name,
            multicast_group_type: match s.multicast.class {
                MulticastClass::C => api::MulticastGroupType::ClassC,
                MulticastClass::B => api::MulticastGroupType::ClassB,
            } as i32,
            multicast_class_c_scheduling_type: api::MulticastGroupSchedulingType::Delay as i32,
            multicast_dr: u32::from(s.multicast.dr),
            multicast_class_b_ping_slot_periodicity: u32::from(s.multicast.ping_slot_periodicity),
            multicast_frequency: s.multicast.frequency,
            multicast_timeout: u32::from(s.multicast.timeout_exp),
            calculate_multicast_timeout: false,
            // ChirpStack counts retries after the first attempt.
            unicast_max_retry_count: s.unicast.attempts.saturating_sub(1),
            fragmentation_fragment_size: u32::from(s.fragmentation.fragment_size),
            calculate_fragmentation_fragment_size: false,
            fragmentation_redundancy_percentage: pct.unwrap_or(0),
            fragmentation_session_index: u32::from(s.fragmentation.session_index),
            fragmentation_matrix: u32::from(s.fragmentation.matrix),
            fragmentation_block_ack_delay: u32::from(s.fragmentation.block_ack_delay),
            fragmentation_descriptor: s.descriptor().to_vec(),
            request_fragmentation_session_status: match s.request_frag_status {
                FragStatusRequest::None => api::RequestFragmentationSessionStatus::NoRequest,
                FragStatusRequest::AfterEnqueue => {
                    api::RequestFragmentationSessionStatus::AfterFragmentEnqueue
                }
                FragStatusRequest::AfterSession => {
                    api::RequestFragmentationSessionStatus::AfterSessionTimeout
                }
            } as i32,
            payload: campaign.payload.to_vec(),
            on_complete_set_device_tags: Default::default(),
        }
    }

    /// The jobs ChirpStack has run (or is running) for one deployment.
    async fn jobs_of(
        &self,
        client: &mut FuotaServiceClient<Channel>,
        deployment_id: &str,
    ) -> Result<Vec<api::FuotaDeploymentJob>, DriverError> {
        Ok(client
            .list_jobs(self.request(api::ListFuotaDeploymentJobsRequest {
                fuota_deployment_id: deployment_id.to_string(),
            })?)
            .await
            .map_err(|s| self.map_status(s))?
            .into_inner()
            .jobs)
    }

    /// Every device of one deployment, read page by page: ChirpStack caps a page's size.
    async fn devices_of(
        &self,
        client: &mut FuotaServiceClient<Channel>,
        deployment_id: &str,
    ) -> Result<Vec<api::FuotaDeploymentDeviceListItem>, DriverError> {
        let mut devices = Vec::new();
        let mut offset = 0;
        loop {
            let page = client
                .list_devices(self.request(api::ListFuotaDeploymentDevicesRequest {
                    limit: 500,
                    offset,
                    fuota_deployment_id: deployment_id.to_string(),
                })?)
                .await
                .map_err(|s| self.map_status(s))?
                .into_inner();
            let n = page.result.len() as u32;
            devices.extend(page.result);
            offset += n;
            if n == 0 || offset >= page.total_count {
                return Ok(devices);
            }
        }
    }

    async fn delete_all(&self, deployments: &[Deployment]) {
        let Ok(mut client) = self.fuota() else {
            return;
        };
        for d in deployments {
            if let Ok(r) = self.request(api::DeleteFuotaDeploymentRequest { id: d.id.clone() }) {
                let _ = client.delete_deployment(r).await;
            }
        }
    }
}

#[async_trait]
impl CampaignDriver for ChirpstackV4Driver {
    fn kind(&self) -> DriverKind {
        DriverKind::ChirpstackV4
    }

    async fn preflight(
        &self,
        _ctx: &DriverContext,
        campaign: &Campaign,
    ) -> Result<Vec<FieldError>, DriverError> {
        let (registered, mut errors) = self.registered(campaign).await?;
        let (_, unknown) = self.groups(campaign, &registered);
        if !unknown.is_empty() {
            errors.push(FieldError {
                field: "devices".into(),
                error: format!(
                    "neither ChirpStack nor lorafleet knows the application or device profile of {} (ChirpStack needs them for a deployment); set fuota.chirpstack_v4.application_id and device_profile_id",
                    unknown.join(", ")
                ),
            });
        }
        errors.extend(self.profile_errors(campaign).await?);
        let mut client = DeviceServiceClient::new(self.channel()?);
        let v11 = campaign.settings.lorawan_version == "1.1";
        for d in &campaign.devices {
            let field = format!("keys.per_device.{}", d.dev_eui);
            let response = client
                .get_keys(self.request(api::GetDeviceKeysRequest {
                    dev_eui: d.dev_eui.clone(),
                })?)
                .await;
            let keys = match response {
                Ok(r) => r.into_inner().device_keys.unwrap_or_default(),
                Err(s) if s.code() == tonic::Code::NotFound => {
                    errors.push(FieldError {
                        field,
                        error: format!(
                            "ChirpStack has no keys for {} ({}); set them in ChirpStack (device → OTAA keys)",
                            d.dev_eui,
                            s.message()
                        ),
                    });
                    continue;
                }
                Err(s) => return Err(self.map_status(s)),
            };
            let (held, name) = if v11 {
                (keys.app_key.as_str(), "AppKey")
            } else {
                (keys.gen_app_key.as_str(), "GenAppKey")
            };
            let held_bytes = match held_key(held) {
                Ok(k) => k,
                Err(problem) => {
                    errors.push(FieldError {
                        field,
                        error: format!(
                            "ChirpStack's {name} for {} is {problem}: ChirpStack derives the McRootKey from it, so the device would refuse the multicast setup; set the device's {name} in ChirpStack",
                            d.dev_eui,
                        ),
                    });
                    continue;
                }
            };
            let given = match (
                campaign.keys.per_device.get(&d.dev_eui),
                campaign.keys.gen_app_key,
            ) {
                (Some(DeviceKey::GenAppKey(k)), _) | (Some(DeviceKey::AppKey(k)), _) => Some(*k),
                (None, Some(k)) if !v11 => Some(k),
                _ => None,
            };
            if let Some(k) = given {
                if k.as_slice() != held_bytes.as_slice() {
                    errors.push(FieldError {
                        field,
                        error: format!(
                            "the key given for {} differs from the {name} ChirpStack holds, and ChirpStack uses its own; leave it out or correct it in ChirpStack",
                            d.dev_eui
                        ),
                    });
                }
            }
        }
        Ok(errors)
    }

    async fn start(
        &self,
        _ctx: &DriverContext,
        campaign: &Campaign,
    ) -> Result<PollOutcome, DriverError> {
        // Read again: the profile may have changed since the start was pressed.
        let (registered, _) = self.registered(campaign).await?;
        let (groups, unknown) = self.groups(campaign, &registered);
        if !unknown.is_empty() {
            return Err(DriverError::Invalid(format!(
                "no application or device profile known for {}",
                unknown.join(", ")
            )));
        }
        let mut client = self.fuota()?;
        let mut created: Vec<Deployment> = Vec::new();
        let mut log = Vec::new();
        let total = groups.len();
        for (i, ((app, profile), devices)) in groups.into_iter().enumerate() {
            let name = if total == 1 {
                format!("{} (lorafleet #{})", campaign.name, campaign.id)
            } else {
                format!(
                    "{} (lorafleet #{}, {}/{total})",
                    campaign.name,
                    campaign.id,
                    i + 1
                )
            };
            let message = Self::deployment_message(campaign, &app, &profile, name);
            let step = async {
                let id = client
                    .create_deployment(self.request(api::CreateFuotaDeploymentRequest {
                        deployment: Some(message),
                    })?)
                    .await
                    .map_err(|s| self.map_status(s))?
                    .into_inner()
                    .id;
                created.push(Deployment {
                    id: id.clone(),
                    application_id: app.clone(),
                    device_profile_id: profile.clone(),
                    devices: devices.clone(),
                });
                client
                    .add_devices(self.request(api::AddDevicesToFuotaDeploymentRequest {
                        fuota_deployment_id: id.clone(),
                        dev_euis: devices.clone(),
                    })?)
                    .await
                    .map_err(|s| self.map_status(s))?;
                // Without gateways ChirpStack picks the fewest that cover the devices itself.
                let gateways = &campaign.settings.multicast.gateways;
                if !gateways.is_empty() {
                    client
                        .add_gateways(self.request(api::AddGatewaysToFuotaDeploymentRequest {
                            fuota_deployment_id: id.clone(),
                            gateway_ids: gateways.clone(),
                        })?)
                        .await
                        .map_err(|s| self.map_status(s))?;
                }
                client
                    .start_deployment(
                        self.request(api::StartFuotaDeploymentRequest { id: id.clone() })?,
                    )
                    .await
                    .map_err(|s| self.map_status(s))?;
                Ok::<String, DriverError>(id)
            }
            .await;
            match step {
                Ok(id) => log.push(LogLine::info(format!(
                    "ChirpStack deployment {id} started for {} device{} (device profile {profile})",
                    devices.len(),
                    if devices.len() == 1 { "" } else { "s" }
                ))),
                Err(e) => {
                    // Leave nothing half-made behind: the campaign fails as a whole.
                    self.delete_all(&created).await;
                    return Err(e);
                }
            }
        }
        let state = serde_json::to_value(State {
            deployments: created,
        })
        .map_err(|e| DriverError::Invalid(format!("driver state: {e}")))?;
        Ok(PollOutcome::started(state, log))
    }

    async fn poll(
        &self,
        _ctx: &DriverContext,
        campaign: &Campaign,
    ) -> Result<PollOutcome, DriverError> {
        let state = state_of(campaign);
        if state.deployments.is_empty() {
            return Err(DriverError::Invalid(
                "the campaign has no ChirpStack deployment".into(),
            ));
        }
        let frag_status_requested =
            campaign.settings.request_frag_status != FragStatusRequest::None;
        let mut client = self.fuota()?;
        let mut outcome = PollOutcome::default();
        let mut all_completed = true;
        let mut stopped = Vec::new();
        let now = Utc::now();
        for dep in &state.deployments {
            let got = client
                .get_deployment(
                    self.request(api::GetFuotaDeploymentRequest { id: dep.id.clone() })?,
                )
                .await
                .map_err(|s| self.map_status(s))?
                .into_inner();
            let done = got.completed_at.is_some();
            all_completed &= done;
            let jobs = self.jobs_of(&mut client, &dep.id).await?;
            outcome
                .log
                .extend(jobs.iter().map(|j| job_log_line(&dep.id, j)));
            let ended = match (done, jobs::verdict(&jobs, now, self.stall_after)) {
                (false, jobs::Verdict::Stopped(why) | jobs::Verdict::Stalled(why)) => {
                    outcome.log.push(LogLine {
                        level: LogLevel::Error,
                        dedup_key: Some(format!("{}|ended|{why}", dep.id)),
                        ..LogLine::info(format!("deployment {}: {why}", dep.id))
                    });
                    stopped.push(why.clone());
                    Some(why)
                }
                _ => None,
            };
            let progress = DeploymentProgress {
                done,
                ended,
                reached: jobs::step_reached(&jobs),
                frag_status_requested,
            };
            for d in self.devices_of(&mut client, &dep.id).await? {
                outcome.devices.push(device_report(&d, &progress));
            }
        }
        if all_completed
            || (!outcome.devices.is_empty() && outcome.devices.iter().all(|d| d.stage.is_final()))
        {
            let none_completed = outcome.devices.iter().all(|d| d.stage != Stage::Completed);
            outcome.finished = Some(match stopped.first() {
                // ChirpStack's own reason says more than "no device completed".
                Some(why) if none_completed => Finished::Failed(why.clone()),
                _ => outcome_of(&outcome.devices),
            });
        }
        Ok(outcome)
    }

    async fn cancel(&self, _ctx: &DriverContext, campaign: &Campaign) -> Result<(), DriverError> {
        let state = state_of(campaign);
        let mut client = self.fuota()?;
        for d in &state.deployments {
            client
                .delete_deployment(
                    self.request(api::DeleteFuotaDeploymentRequest { id: d.id.clone() })?,
                )
                .await
                .map_err(|s| self.map_status(s))?;
        }
        Ok(())
    }
}

/// What a device's stage depends on beyond its own steps: the deployment as a whole.
#[derive(Debug, Clone)]
struct DeploymentProgress {
    /// ChirpStack has finished the deployment (whether or not every device completed).
    done: bool,
    /// ChirpStack stopped (or stalled) the deployment without finishing it: why.
    ended: Option<String>,
    /// The furthest step ChirpStack has attempted.
    reached: jobs::Step,
    /// The campaign asks for FragSessionStatus, so completion waits for the answers.
    frag_status_requested: bool,
}

/// One of ChirpStack's deployment jobs as a line of the campaign's log. The key makes each
/// state of a job stored once, since every poll returns every job again.
fn job_log_line(deployment_id: &str, j: &api::FuotaDeploymentJob) -> LogLine {
    let mut text = format!(
        "job {}: attempt {}/{}",
        j.job,
        j.attempt_count,
        j.max_retry_count + 1
    );
    if j.completed_at.is_some() {
        text.push_str(", completed");
    }
    if !j.warning_msg.is_empty() {
        text.push_str(&format!(", warning: {}", j.warning_msg));
    }
    if !j.error_msg.is_empty() {
        text.push_str(&format!(", error: {}", j.error_msg));
    }
    let at = to_utc(j.completed_at.as_ref())
        .or(to_utc(j.created_at.as_ref()))
        .unwrap_or_else(Utc::now);
    LogLine {
        at,
        level: if !j.error_msg.is_empty() {
            LogLevel::Error
        } else if !j.warning_msg.is_empty() {
            LogLevel::Warning
        } else {
            LogLevel::Info
        },
        from_service: true,
        dev_eui: None,
        message: format!("deployment {deployment_id}: {text}"),
        dedup_key: Some(format!(
            "{}|{}|{}|{}",
            deployment_id,
            to_utc(j.created_at.as_ref())
                .map(|t| t.timestamp_micros())
                .unwrap_or(0),
            j.job,
            text
        )),
    }
}

/// A device's report from ChirpStack's view of it.
fn device_report(
    d: &api::FuotaDeploymentDeviceListItem,
    progress: &DeploymentProgress,
) -> DeviceReport {
    let stage = if !d.error_msg.is_empty() || d.completed_at.is_none() && progress.ended.is_some() {
        Stage::Failed
    } else if d.completed_at.is_some() {
        Stage::Completed
    } else if progress.done {
        // ChirpStack finished without completing the device.
        Stage::Failed
    } else {
        let steps = jobs::DeviceSteps {
            mc_group_setup: d.mc_group_setup_completed_at.is_some(),
            frag_session_setup: d.frag_session_setup_completed_at.is_some(),
            mc_session: d.mc_session_completed_at.is_some(),
        };
        jobs::stage_of(steps, progress.reached, progress.frag_status_requested)
    };
    let mut report = DeviceReport::new(d.dev_eui.to_ascii_lowercase(), stage);
    report.mc_group_setup_at = to_utc(d.mc_group_setup_completed_at.as_ref());
    report.frag_session_setup_at = to_utc(d.frag_session_setup_completed_at.as_ref());
    report.mc_session_setup_at = to_utc(d.mc_session_completed_at.as_ref());
    report.frag_status_at = to_utc(d.frag_status_completed_at.as_ref());
    report.completed_at = to_utc(d.completed_at.as_ref());
    report.error = if !d.error_msg.is_empty() {
        Some(d.error_msg.clone())
    } else if let (Stage::Failed, Some(why)) = (stage, &progress.ended) {
        Some(why.clone())
    } else if stage == Stage::Failed {
        Some("the deployment ended before the device completed".into())
    } else {
        None
    };
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_key_that_is_not_usable_says_why() {
        assert_eq!(
            held_key("0302030405060708090a0b0c0d0e0f10").map(hex::encode),
            Ok("0302030405060708090a0b0c0d0e0f10".to_string())
        );
        assert_eq!(held_key(" "), Err("empty".to_string()));
        assert_eq!(
            held_key("00000000000000000000000000000000"),
            Err("all zeros".to_string())
        );
        assert_eq!(
            held_key("0302"),
            Err("not a key (a key is 32 hex digits (16 bytes), got 4 characters)".to_string())
        );
    }

    fn timestamp(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    #[test]
    fn a_job_line_says_its_attempt_and_takes_the_level_of_its_worst_message() {
        let mut j = api::FuotaDeploymentJob {
            job: "MC_GROUP_SETUP".into(),
            attempt_count: 2,
            max_retry_count: 3,
            created_at: timestamp(1_700_000_000),
            ..Default::default()
        };
        let line = job_log_line("dep-1", &j);
        assert_eq!(line.level, LogLevel::Info);
        assert_eq!(
            line.message,
            "deployment dep-1: job MC_GROUP_SETUP: attempt 2/4"
        );
        assert_eq!(line.at.timestamp(), 1_700_000_000);
        assert_eq!(
            line.dedup_key.as_deref(),
            Some("dep-1|1700000000000000|MC_GROUP_SETUP|job MC_GROUP_SETUP: attempt 2/4")
        );

        j.warning_msg = "slow".into();
        assert_eq!(job_log_line("dep-1", &j).level, LogLevel::Warning);
        j.error_msg = "timeout".into();
        j.completed_at = timestamp(1_700_000_060);
        let line = job_log_line("dep-1", &j);
        assert_eq!(line.level, LogLevel::Error);
        assert_eq!(line.at.timestamp(), 1_700_000_060);
        assert_eq!(
            line.message,
            "deployment dep-1: job MC_GROUP_SETUP: attempt 2/4, completed, warning: slow, error: timeout"
        );
    }

    #[test]
    fn a_device_is_complete_only_when_chirpstack_says_so() {
        let running = DeploymentProgress {
            done: false,
            ended: None,
            reached: jobs::Step::FragStatus,
            frag_status_requested: true,
        };
        let every_step = api::FuotaDeploymentDeviceListItem {
            dev_eui: "0102030405060708".into(),
            mc_group_setup_completed_at: timestamp(1),
            frag_session_setup_completed_at: timestamp(2),
            mc_session_completed_at: timestamp(3),
            frag_status_completed_at: timestamp(4),
            ..Default::default()
        };
        let r = device_report(&every_step, &running);
        assert_eq!(r.stage, Stage::FragStatus);
        assert_eq!(r.error, None);
        assert_eq!(r.frag_status_at.map(|t| t.timestamp()), Some(4));

        let completed = api::FuotaDeploymentDeviceListItem {
            completed_at: timestamp(5),
            ..every_step.clone()
        };
        assert_eq!(device_report(&completed, &running).stage, Stage::Completed);
    }

    #[test]
    fn a_device_fails_on_its_own_error_or_when_the_deployment_ends_without_it() {
        let progress = DeploymentProgress {
            done: false,
            ended: None,
            reached: jobs::Step::McGroupSetup,
            frag_status_requested: false,
        };
        let erred = api::FuotaDeploymentDeviceListItem {
            dev_eui: "0102030405060708".into(),
            error_msg: "no answer".into(),
            completed_at: timestamp(5),
            ..Default::default()
        };
        let r = device_report(&erred, &progress);
        assert_eq!(
            (r.stage, r.error.as_deref()),
            (Stage::Failed, Some("no answer"))
        );

        let left_behind = api::FuotaDeploymentDeviceListItem {
            dev_eui: "0102030405060708".into(),
            ..Default::default()
        };
        let ended = DeploymentProgress {
            done: true,
            ..progress.clone()
        };
        let r = device_report(&left_behind, &ended);
        assert_eq!(
            (r.stage, r.error.as_deref()),
            (
                Stage::Failed,
                Some("the deployment ended before the device completed")
            )
        );
    }

    #[test]
    fn a_device_fails_with_chirpstacks_reason_when_the_deployment_stopped() {
        let stopped = DeploymentProgress {
            done: false,
            ended: Some("ChirpStack stopped the deployment at job CREATE_MC_GROUP: Device-profile does not support TS005".into()),
            reached: jobs::Step::Preparing,
            frag_status_requested: true,
        };
        let waiting = api::FuotaDeploymentDeviceListItem {
            dev_eui: "0102030405060708".into(),
            ..Default::default()
        };
        let r = device_report(&waiting, &stopped);
        assert_eq!(r.stage, Stage::Failed);
        assert!(r
            .error
            .unwrap()
            .ends_with("Device-profile does not support TS005"));
    }
}
