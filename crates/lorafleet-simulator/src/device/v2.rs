//! The device side of TS003, TS004 and TS005 **v2** (the `lora-basics-modem` stack): every
//! frame is read and every answer written by lrwn's v2 codecs; what the packages do is the
//! same state machine as v1 (`super`), with what v2 adds: SessionCnt (a counter not above the
//! last one accepted is a replay), the data block's MIC checked once the image is rebuilt,
//! the v2 parity matrix, and the Status byte first in FragSessionStatusAns.

use lorafleet_codec::fragmentation::Matrix;
use lrwn::applayer::{clocksync, fragmentation, multicastsetup};
use rand::Rng;

use super::{
    answer_delay, mc_group_status, package, ports, Ctx, Effect, McSession, SimDevice, RESYNC_MS,
};

impl SimDevice {
    pub(super) fn clock_sync_v2(&mut self, now_ms: i64, data: &[u8]) -> Option<Vec<u8>> {
        use clocksync::v2::*;
        let answer = match Payload::from_slice(false, data).ok()? {
            Payload::AppTimeAns(a) => {
                if a.param.token_ans == self.state.time_token {
                    self.state.clock_offset_ms += i64::from(a.time_correction) * 1000;
                    self.state.clock_synced = true;
                    self.state.time_token = (self.state.time_token + 1) & 0x0f;
                    self.state.next_clock_sync_ms = now_ms + RESYNC_MS;
                }
                return None;
            }
            Payload::PackageVersionReq => Payload::PackageVersionAns(PackageVersionAnsPayload {
                package_identifier: package::CLOCK_SYNC,
                package_version: 2,
            }),
            // AppTimeReq's v1 and v2 layouts are the same bytes.
            Payload::ForceDeviceResyncCmd(_) => return Some(self.app_time_req(now_ms)),
            Payload::DeviceAppTimePeropdicityReq(_) => {
                Payload::DeviceAppTimePeropdicityAns(DeviceAppTimePeriodicityAnsPayload {
                    status: DeviceAppTimePeriodicityAnsPayloadStatus {
                        not_supported: true,
                    },
                    time: self.device_gps(now_ms),
                })
            }
            _ => return None,
        };
        answer.to_vec().ok()
    }

    pub(super) fn multicast_setup_v2(
        &mut self,
        ctx: &Ctx,
        now_ms: i64,
        data: &[u8],
    ) -> Option<Vec<u8>> {
        use multicastsetup::v1;
        use multicastsetup::v2::*;
        let answer = match Payload::from_slice(false, data).ok()? {
            Payload::PackageVersionReq => Payload::PackageVersionAns(PackageVersionAnsPayload {
                package_identifier: package::MULTICAST_SETUP,
                package_version: 2,
            }),
            Payload::McGroupStatusReq(r) => {
                Payload::McGroupStatusAns(group_status_v2(&self.state.mc_groups, &r))
            }
            Payload::McGroupSetupReq(r) => {
                let a = self.mc_group_setup(&v1::McGroupSetupReqPayload {
                    mc_group_id_header: v1::McGroupSetupReqPayloadMcGroupIdHeader {
                        mc_group_id: r.mc_group_id_header.mc_group_id,
                    },
                    mc_addr: r.mc_addr,
                    mc_key_encrypted: r.mc_key_encrypted,
                    min_mc_f_count: r.min_mc_f_count,
                    max_mc_f_count: r.max_mc_f_count,
                });
                Payload::McGroupSetupAns(McGroupSetupAnsPayload {
                    mc_group_id_header: McGroupSetupAnsPayloadMcGroupIdHeader {
                        mc_group_id: a.mc_group_id_header.mc_group_id,
                        id_error: a.mc_group_id_header.id_error,
                    },
                })
            }
            Payload::McGroupDeleteReq(r) => {
                let a = self.mc_group_delete(&v1::McGroupDeleteReqPayload {
                    mc_group_id_header: v1::McGroupDeleteReqPayloadMcGroupIdHeader {
                        mc_group_id: r.mc_group_id_header.mc_group_id,
                    },
                });
                Payload::McGroupDeleteAns(McGroupDeleteAnsPayload {
                    mc_group_id_header: McGroupDeleteAnsPayloadMcGroupIdHeader {
                        mc_group_id: a.mc_group_id_header.mc_group_id,
                        mc_group_undefined: a.mc_group_id_header.mc_group_undefined,
                    },
                })
            }
            Payload::McClassCSessionReq(r) => {
                let id = r.mc_group_id_header.mc_group_id;
                let session = McSession {
                    ping_slot_periodicity: None,
                    start_gps: r.session_time,
                    timeout_exp: r.session_time_out.time_out,
                    frequency: r.dl_frequ,
                    dr: r.dr,
                };
                let (st, time_to_start) = self.open_session(ctx, now_ms, id, session);
                Payload::McClassCSessionAns(McClassCSessionAnsPayload {
                    status_and_mc_group_id: McClassCSessionAnsPayloadStatusAnsMcGroupId {
                        mc_group_id: id,
                        dr_error: st.dr_error,
                        freq_error: st.freq_error,
                        mc_group_undefined: st.undefined,
                        start_missed: false,
                    },
                    time_to_start,
                })
            }
            Payload::McClassBSessionReq(r) => {
                let id = r.mc_group_id_header.mc_group_id;
                let session = McSession {
                    ping_slot_periodicity: Some(r.time_out_periodicity.periodicity),
                    start_gps: r.session_time,
                    timeout_exp: r.time_out_periodicity.time_out,
                    frequency: r.dl_frequ,
                    dr: r.dr,
                };
                let (st, time_to_start) = self.open_session(ctx, now_ms, id, session);
                Payload::McClassBSessionAns(McClassBSessionAnsPayload {
                    status_and_mc_group_id: McClassBSessionAnsPayloadStatusAndMcGroupId {
                        mc_group_id: id,
                        dr_error: st.dr_error,
                        freq_error: st.freq_error,
                        mc_group_undefined: st.undefined,
                        start_missed: false,
                    },
                    time_to_start,
                })
            }
            _ => return None,
        };
        answer.to_vec().ok()
    }

    pub(super) fn fragmentation_v2(
        &mut self,
        ctx: &Ctx,
        now_ms: i64,
        data: &[u8],
        group: Option<u8>,
        rng: &mut impl Rng,
    ) -> Vec<Effect> {
        use fragmentation::v1;
        use fragmentation::v2::*;
        let Ok(payload) = Payload::from_slice(false, data) else {
            return Vec::new();
        };
        let mut effects = Vec::new();
        let (answer, delay_ms) = match payload {
            Payload::DataFragment(f) => {
                let f = v1::DataFragmentPayload {
                    index_and_n: v1::DataFragmentPayloadIndexAndN {
                        n: f.index_and_n.n,
                        frag_index: f.index_and_n.frag_index,
                    },
                    data: f.data,
                };
                return self.data_fragment(ctx, now_ms, group, &f);
            }
            Payload::PackageVersionReq => (
                Payload::PackageVersionAns(PackageVersionAnsPayload {
                    package_identifier: package::FRAGMENTATION,
                    package_version: 2,
                }),
                answer_delay(rng),
            ),
            Payload::FragSessionSetupReq(r) => (
                Payload::FragSessionSetupAns(self.frag_session_setup_v2(ctx, &r, &mut effects)),
                answer_delay(rng),
            ),
            Payload::FragSessionDeleteReq(r) => {
                let req = v1::FragSessionDeleteReqPayload {
                    frag_index: r.frag_index,
                };
                let a = self.frag_session_delete(&req, &mut effects);
                let a = FragSessionDeleteAnsPayload {
                    frag_index: a.frag_index,
                    session_does_not_exist: a.session_does_not_exist,
                };
                (Payload::FragSessionDeleteAns(a), answer_delay(rng))
            }
            Payload::FragSessionStatusReq(r) => {
                let req = v1::FragSessionStatusReqPayload {
                    participants: r.participants,
                    frag_index: r.frag_index,
                };
                let exists = self
                    .state
                    .frag_sessions
                    .get(usize::from(r.frag_index))
                    .is_some_and(Option::is_some);
                if !exists && group.is_none() {
                    // v2 says so in its Status byte (bit 2) instead of staying silent.
                    let a = FragSessionStatusAnsPayload {
                        status: FragSessionStatusAnsPayloadStatus {
                            memory_error: false,
                            mic_error: false,
                            session_does_not_exist: true,
                        },
                        received_and_index: FragSessionStatusAnsPayloadReceivedAndIndex {
                            nb_frag_received: 0,
                            frag_index: r.frag_index,
                        },
                        missing_frag: 0,
                    };
                    (Payload::FragSessionStatusAns(a), answer_delay(rng))
                } else {
                    let Some((a, delay_ms)) = self.frag_session_status(ctx, &req, group, rng)
                    else {
                        return effects;
                    };
                    let mic_error = self
                        .state
                        .frag_sessions
                        .get(usize::from(r.frag_index))
                        .and_then(Option::as_ref)
                        .is_some_and(|s| s.mic_error);
                    let a = FragSessionStatusAnsPayload {
                        status: FragSessionStatusAnsPayloadStatus {
                            memory_error: a.status.not_enough_matrix_memory,
                            mic_error,
                            session_does_not_exist: false,
                        },
                        received_and_index: FragSessionStatusAnsPayloadReceivedAndIndex {
                            nb_frag_received: a.received_and_index.nb_frag_received,
                            frag_index: a.received_and_index.frag_index,
                        },
                        missing_frag: a.missing_frag,
                    };
                    (Payload::FragSessionStatusAns(a), delay_ms)
                }
            }
            _ => return effects,
        };
        if let Ok(bytes) = answer.to_vec() {
            self.state.outbox.push_back((ports::FRAGMENTATION, bytes));
            effects.push(Effect::Wake { delay_ms });
        }
        effects
    }

    /// TS004 v2 FragSessionSetupReq: a SessionCnt not above the last one accepted for the
    /// FragIndex is a replay (LBM and ST refuse it); otherwise v1's checks, and an accepted
    /// session keeps its SessionCnt and MIC and reads parity by the v2 matrix.
    fn frag_session_setup_v2(
        &mut self,
        ctx: &Ctx,
        r: &fragmentation::v2::FragSessionSetupReqPayload,
        effects: &mut Vec<Effect>,
    ) -> fragmentation::v2::FragSessionSetupAnsPayload {
        use fragmentation::v1;
        let index = r.frag_session.frag_index;
        let i = usize::from(index);
        let mut ans = fragmentation::v2::FragSessionSetupAnsPayload {
            frag_algo_unsupported: false,
            not_enough_memory: false,
            frag_index_unsupported: false,
            wrong_descriptor: false,
            session_cnt_replay: false,
            frag_index: index,
        };
        let last = self.state.last_session_cnt.get(i).copied().flatten();
        if last.is_some_and(|l| r.session_cnt <= l) {
            ans.session_cnt_replay = true;
            return ans;
        }
        let req = v1::FragSessionSetupReqPayload {
            frag_session: v1::FragSessionSetuReqPayloadFragSession {
                mc_group_bit_mask: r.frag_session.mc_group_bit_mask,
                frag_index: index,
            },
            nb_frag: r.nb_frag,
            frag_size: r.frag_size,
            control: v1::FragSessionSetuReqPayloadControl {
                block_ack_delay: r.control.block_ack_delay,
                fragmentation_matrix: r.control.frag_algo,
            },
            padding: r.padding,
            descriptor: r.descriptor,
        };
        let a = self.frag_session_setup(ctx, &req, effects);
        ans.frag_algo_unsupported = a.encoding_unsupported;
        ans.not_enough_memory = a.not_enough_memory;
        ans.frag_index_unsupported = a.frag_session_index_not_supported;
        ans.wrong_descriptor = a.wrong_descriptor;
        if !(a.encoding_unsupported || a.not_enough_memory) {
            if let Some(s) = self.state.frag_sessions[i].as_mut() {
                s.v2 = Some((r.session_cnt, r.mic));
            }
            if let Some(d) = self.decoders[i].take() {
                self.decoders[i] = Some(d.with_matrix(Matrix::V2));
            }
            self.state.last_session_cnt[i] = Some(r.session_cnt);
        }
        ans
    }

    /// A rebuilt v2 block is kept only if its MIC (key from the device's root key, B0 with
    /// SessionCnt, FragIndex, Descriptor and the unpadded size) matches the setup's; a v1
    /// session has nothing to check.
    pub(super) fn v2_mic_ok(&mut self, i: usize, image: &[u8]) -> bool {
        use fragmentation::v2::{calculate_mic, get_data_block_int_key};
        let key = lrwn::AES128Key::from_bytes(self.id.gen_app_key);
        let Some(s) = self.state.frag_sessions[i].as_mut() else {
            return true;
        };
        let Some((session_cnt, mic)) = s.v2 else {
            return true;
        };
        let ok = get_data_block_int_key(key)
            .and_then(|k| calculate_mic(k, session_cnt, i as u8, s.descriptor, image))
            .is_ok_and(|m| m == mic);
        if !ok {
            s.mic_error = true;
            self.state.last_error = Some(
                "received image rejected: the data block's MIC does not match (TS004 v2)".into(),
            );
        }
        ok
    }
}

/// McGroupStatusReq (TS005 v2): v1's answer in v2's types.
fn group_status_v2(
    groups: &[Option<super::McGroup>; super::MAX_GROUPS],
    r: &multicastsetup::v2::McGroupStatusReqPayload,
) -> multicastsetup::v2::McGroupStatusAnsPayload {
    use multicastsetup::v1;
    use multicastsetup::v2::*;
    let mask = v1::McGroupStatusReqPayloadCmdMask {
        req_group_mask: r.cmd_mask.req_group_mask,
    };
    let a = mc_group_status(groups, &v1::McGroupStatusReqPayload { cmd_mask: mask });
    McGroupStatusAnsPayload {
        status: McGroupStatusAnsPayloadStatus {
            ans_group_mask: a.status.ans_group_mask,
            nb_total_groups: a.status.nb_total_groups,
        },
        items: a
            .items
            .iter()
            .map(|i| McGroupStatusAnsPayloadItem {
                mc_group_id: i.mc_group_id,
                mc_addr: i.mc_addr,
            })
            .collect(),
    }
}
