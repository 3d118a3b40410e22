//! TS005 key material on the server side: the McRootKey of each device, the McKey encrypted for
//! it, and the session keys of the multicast group. The arithmetic is lrwn's; this module fixes
//! which derivation applies to which LoRaWAN version and turns lrwn's results into plain bytes.

use lrwn::applayer::multicastsetup::v1 as ts005;
use lrwn::{AES128Key, DevAddr};

/// Where a device's McRootKey comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKey {
    /// LoRaWAN 1.0.x: `aes128_encrypt(GenAppKey, 16 x 00)`.
    GenAppKey([u8; 16]),
    /// LoRaWAN 1.1: `aes128_encrypt(AppKey, 20 || 15 x 00)`.
    AppKey([u8; 16]),
}

fn bytes(k: anyhow::Result<AES128Key>) -> [u8; 16] {
    // lrwn's derivations only fail when a 16-byte block is not 16 bytes long.
    k.map_or([0; 16], |k| k.to_bytes())
}

/// The device's McRootKey.
pub fn mc_root_key(root: RootKey) -> [u8; 16] {
    bytes(match root {
        RootKey::GenAppKey(k) => ts005::get_mc_root_key_for_gen_app_key(AES128Key::from_bytes(k)),
        RootKey::AppKey(k) => ts005::get_mc_root_key_for_app_key(AES128Key::from_bytes(k)),
    })
}

/// McKEKey = aes128_encrypt(McRootKey, 16 x 00).
pub fn mc_ke_key(mc_root_key: [u8; 16]) -> [u8; 16] {
    bytes(ts005::get_mc_ke_key(AES128Key::from_bytes(mc_root_key)))
}

/// What McGroupSetupReq carries for a device: `aes128_decrypt(McKEKey, McKey)`, which the
/// device *encrypts* to get McKey back.
pub fn encrypted_mc_key(root: RootKey, mc_key: [u8; 16]) -> [u8; 16] {
    let ke = mc_ke_key(mc_root_key(root));
    ts005::encrypt_mc_key(AES128Key::from_bytes(ke), AES128Key::from_bytes(mc_key))
}

/// (McAppSKey, McNwkSKey) of a group; `mc_addr` most significant byte first.
pub fn session_keys(mc_key: [u8; 16], mc_addr: [u8; 4]) -> ([u8; 16], [u8; 16]) {
    let key = AES128Key::from_bytes(mc_key);
    let addr = DevAddr::from_be_bytes(mc_addr);
    (
        bytes(ts005::get_mc_app_s_key(key, addr)),
        bytes(ts005::get_mc_net_s_key(key, addr)),
    )
}

/// McGroupSetupReq for one device.
pub fn mc_group_setup_req(
    group_id: u8,
    mc_addr: [u8; 4],
    mc_key_encrypted: [u8; 16],
    min_f_cnt: u32,
    max_f_cnt: u32,
) -> Result<Vec<u8>, String> {
    ts005::Payload::McGroupSetupReq(ts005::McGroupSetupReqPayload {
        mc_group_id_header: ts005::McGroupSetupReqPayloadMcGroupIdHeader {
            mc_group_id: group_id,
        },
        mc_addr: DevAddr::from_be_bytes(mc_addr),
        mc_key_encrypted,
        min_mc_f_count: min_f_cnt,
        max_mc_f_count: max_f_cnt,
    })
    .to_vec()
    .map_err(|e| format!("McGroupSetupReq: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> [u8; 16] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// The TS005 conformance vector for LoRaWAN 1.0.x.
    #[test]
    fn conformance_vector() {
        let root = RootKey::GenAppKey(key("0302030405060708090a0b0c0d0e0f10"));
        assert_eq!(
            hex::encode(mc_root_key(root)),
            "55344e82570eaec8bf03b99962d1f445"
        );
        let mc_key = key("0102030405060708090a0b0c0d0e0f10");
        let req =
            mc_group_setup_req(0, [1, 2, 3, 4], encrypted_mc_key(root, mc_key), 0, 65535).unwrap();
        assert_eq!(
            hex::encode(req),
            "02000403020115b6c1f8c91e71210588ef85ed1e638300000000ffff0000"
        );
    }

    #[test]
    fn lorawan_1_1_uses_the_app_key_derivation() {
        let k = key("0302030405060708090a0b0c0d0e0f10");
        assert_ne!(
            mc_root_key(RootKey::AppKey(k)),
            mc_root_key(RootKey::GenAppKey(k))
        );
    }

    #[test]
    fn group_id_must_fit_two_bits() {
        assert!(mc_group_setup_req(4, [0; 4], [0; 16], 0, 1).is_err());
    }
}
