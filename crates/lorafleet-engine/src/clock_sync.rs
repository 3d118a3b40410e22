//! TS003 Application Layer Clock Sync (v1 and v2), the server's answer: the correction that
//! sets a device's clock to the time its AppTimeReq was received.

use chrono::{DateTime, Utc};
use lorafleet_codec::time::unix_to_gps;
use lrwn::applayer::clocksync::v1 as ts003;
use lrwn::applayer::clocksync::v2 as ts003v2;

/// The server's GPS time at `received_at` minus the device's, the short way round (both are
/// GPS seconds modulo 2^32).
fn correction(device_time: u32, received_at: DateTime<Utc>) -> i64 {
    let server = i64::from(unix_to_gps(received_at.timestamp()));
    let diff = (server - i64::from(device_time)).rem_euclid(1 << 32);
    if diff >= 1 << 31 {
        diff - (1 << 32)
    } else {
        diff
    }
}

/// [`answer`] in the device's TS003 version (v2 through lrwn's v2 codec; the AppTimeReq/Ans
/// layout is v1's).
pub fn answer_in(version: u8, payload: &[u8], received_at: DateTime<Utc>) -> Option<Vec<u8>> {
    if version != 2 {
        return answer(payload, received_at);
    }
    let ts003v2::Payload::AppTimeReq(req) = ts003v2::Payload::from_slice(true, payload).ok()?
    else {
        return None;
    };
    let correction = correction(req.device_time, received_at);
    if correction == 0 && !req.param.ans_required {
        return None;
    }
    ts003v2::Payload::AppTimeAns(ts003v2::AppTimeAnsPayload {
        time_correction: i32::try_from(correction).ok()?,
        param: ts003v2::AppTimeAnsPayloadParam {
            token_ans: req.param.token_req,
        },
    })
    .to_vec()
    .ok()
}

/// The AppTimeAns for an AppTimeReq received at `received_at`, or None when the payload is not
/// an AppTimeReq or the device does not need an answer (its clock is right and it did not ask
/// for one).
pub fn answer(payload: &[u8], received_at: DateTime<Utc>) -> Option<Vec<u8>> {
    let ts003::Payload::AppTimeReq(req) = ts003::Payload::from_slice(true, payload).ok()? else {
        return None;
    };
    let correction = correction(req.device_time, received_at);
    if correction == 0 && !req.param.ans_required {
        return None;
    }
    ts003::Payload::AppTimeAns(ts003::AppTimeAnsPayload {
        time_correction: i32::try_from(correction).ok()?,
        param: ts003::AppTimeAnsPayloadParam {
            token_ans: req.param.token_req,
        },
    })
    .to_vec()
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(device_time: u32, token: u8, ans_required: bool) -> Vec<u8> {
        ts003::Payload::AppTimeReq(ts003::AppTimeReqPayload {
            device_time,
            param: ts003::AppTimeReqPayloadParam {
                token_req: token,
                ans_required,
            },
        })
        .to_vec()
        .unwrap()
    }

    #[test]
    fn correction_is_server_time_minus_device_time() {
        let at = DateTime::from_timestamp(1_623_165_310, 0).unwrap();
        let server = unix_to_gps(at.timestamp());
        let ans = answer(&req(server - 42, 5, false), at).unwrap();
        // CID 01, correction +42 (i32 LE), token 5.
        assert_eq!(ans, vec![0x01, 42, 0, 0, 0, 5]);
        let ans = answer(&req(server + 7, 3, false), at).unwrap();
        assert_eq!(
            ans,
            [vec![0x01], (-7i32).to_le_bytes().to_vec(), vec![3]].concat()
        );
        assert_eq!(answer(&req(server, 1, false), at), None);
        assert!(answer(&req(server, 1, true), at).is_some());
        assert_eq!(
            answer(&[0x00], at),
            None,
            "PackageVersionAns is not a request"
        );
    }

    #[test]
    fn v2_answers_the_same_bytes() {
        let at = DateTime::from_timestamp(1_623_165_310, 0).unwrap();
        let server = unix_to_gps(at.timestamp());
        assert_eq!(
            answer_in(2, &req(server - 42, 5, false), at).unwrap(),
            vec![0x01, 42, 0, 0, 0, 5]
        );
        assert_eq!(answer_in(2, &req(server, 1, false), at), None);
        assert_eq!(
            answer_in(1, &req(server + 1, 2, false), at),
            answer(&req(server + 1, 2, false), at)
        );
    }
}
