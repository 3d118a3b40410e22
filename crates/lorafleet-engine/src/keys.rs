//! TS005 key material, for both ends of the air: the McRootKey of each device, the McKEKey that
//! protects the multicast key on its way, the McKey as sent and as recovered, and the session
//! keys of a multicast group. Every derivation is one AES-128 block, so none of them can fail;
//! the only fallible step is reading a key from text ([`parse_key`]), at the edge.

use aes::cipher::{generic_array::GenericArray, BlockDecrypt, BlockEncrypt, KeyInit};
use serde::{Deserialize, Serialize};

/// A 128-bit key read from text that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a key is 32 hex digits (16 bytes), got {0} characters")]
    Length(usize),
    #[error("a key is 32 hex digits")]
    NotHex,
}

/// Parses a 128-bit key written as 32 hex digits (spaces and colons allowed).
pub fn parse_key(text: &str) -> Result<[u8; 16], KeyError> {
    let clean: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    if clean.len() != 32 {
        return Err(KeyError::Length(clean.len()));
    }
    let mut key = [0u8; 16];
    hex::decode_to_slice(&clean, &mut key).map_err(|_| KeyError::NotHex)?;
    Ok(key)
}

/// Where a device's McRootKey comes from; stored with a campaign as `{"gen_app_key": ..}` or
/// `{"app_key": ..}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RootKey {
    /// LoRaWAN 1.0.x: `aes128_encrypt(GenAppKey, 16 x 00)`.
    GenAppKey([u8; 16]),
    /// LoRaWAN 1.1: `aes128_encrypt(AppKey, 20 || 15 x 00)`.
    AppKey([u8; 16]),
}

fn encrypt(key: [u8; 16], block: [u8; 16]) -> [u8; 16] {
    let cipher = aes::Aes128::new(GenericArray::from_slice(&key));
    let mut b = GenericArray::from(block);
    cipher.encrypt_block(&mut b);
    b.into()
}

fn decrypt(key: [u8; 16], block: [u8; 16]) -> [u8; 16] {
    let cipher = aes::Aes128::new(GenericArray::from_slice(&key));
    let mut b = GenericArray::from(block);
    cipher.decrypt_block(&mut b);
    b.into()
}

/// The device's McRootKey.
pub fn mc_root_key(root: RootKey) -> [u8; 16] {
    match root {
        RootKey::GenAppKey(k) => encrypt(k, [0; 16]),
        RootKey::AppKey(k) => {
            let mut block = [0; 16];
            block[0] = 0x20;
            encrypt(k, block)
        }
    }
}

/// McKEKey = aes128_encrypt(McRootKey, 16 x 00).
pub fn mc_ke_key(mc_root_key: [u8; 16]) -> [u8; 16] {
    encrypt(mc_root_key, [0; 16])
}

/// Server side: what McGroupSetupReq carries for a device, `aes128_decrypt(McKEKey, McKey)`.
pub fn encrypted_mc_key(root: RootKey, mc_key: [u8; 16]) -> [u8; 16] {
    decrypt(mc_ke_key(mc_root_key(root)), mc_key)
}

/// Device side: the McKey recovered from McGroupSetupReq. The device *encrypts* (TS005), so a
/// device needs only the AES encryption its LoRaWAN stack already has.
pub fn received_mc_key(mc_ke_key: [u8; 16], mc_key_encrypted: [u8; 16]) -> [u8; 16] {
    encrypt(mc_ke_key, mc_key_encrypted)
}

/// (McAppSKey, McNwkSKey) of a group; `mc_addr` most significant byte first (the blocks carry
/// it little-endian).
pub fn session_keys(mc_key: [u8; 16], mc_addr: [u8; 4]) -> ([u8; 16], [u8; 16]) {
    let block = |kind: u8| {
        let mut b = [0; 16];
        b[0] = kind;
        for (i, byte) in mc_addr.iter().rev().enumerate() {
            b[1 + i] = *byte;
        }
        b
    };
    (encrypt(mc_key, block(0x01)), encrypt(mc_key, block(0x02)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lrwn::applayer::multicastsetup::v1 as lrwn_ts005;
    use lrwn::{AES128Key, DevAddr};

    fn key(s: &str) -> [u8; 16] {
        parse_key(s).unwrap()
    }

    /// The TS005 conformance vector for LoRaWAN 1.0.x (fuota-facts.md), both ends: the device
    /// recovers the McKey the server encrypted for it.
    #[test]
    fn conformance_vector_lorawan_1_0() {
        let root = RootKey::GenAppKey(key("0302030405060708090a0b0c0d0e0f10"));
        assert_eq!(
            hex::encode(mc_root_key(root)),
            "55344e82570eaec8bf03b99962d1f445"
        );
        let mc_key = key("0102030405060708090a0b0c0d0e0f10");
        let sent = encrypted_mc_key(root, mc_key);
        assert_eq!(hex::encode(sent), "15b6c1f8c91e71210588ef85ed1e6383");
        let ke = mc_ke_key(mc_root_key(root));
        assert_eq!(received_mc_key(ke, sent), mc_key);
    }

    /// LoRaWAN 1.1: McRootKey = aes128_encrypt(AppKey, 20 || 15 x 00). The expected bytes were
    /// computed apart from this module (`openssl enc -aes-128-ecb`), and the test recomputes the
    /// root key from the formula with the `aes` block cipher called directly.
    #[test]
    fn vector_lorawan_1_1() {
        let app_key = key("0302030405060708090a0b0c0d0e0f10");
        let root = RootKey::AppKey(app_key);
        let cipher = aes::Aes128::new(GenericArray::from_slice(&app_key));
        let mut block = GenericArray::from([0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        cipher.encrypt_block(&mut block);
        assert_eq!(
            hex::encode(block),
            "a2b2f82d7041e947190509ea03af939e",
            "formula"
        );
        assert_eq!(
            hex::encode(mc_root_key(root)),
            "a2b2f82d7041e947190509ea03af939e"
        );
        assert_eq!(
            hex::encode(mc_ke_key(mc_root_key(root))),
            "81dc7e7f4aead96f61298a40c35c3db8"
        );
        let mc_key = key("0102030405060708090a0b0c0d0e0f10");
        assert_eq!(
            hex::encode(encrypted_mc_key(root, mc_key)),
            "a689252818c17577a212cb7cb850450e"
        );
    }

    /// ChirpStack derives with lrwn; a device set up by lorafleet must agree with a group that
    /// ChirpStack's side computes.
    #[test]
    fn agrees_with_lrwn() {
        let k = key("2b7e151628aed2a6abf7158809cf4f3c");
        let lk = AES128Key::from_bytes(k);
        let gen = lrwn_ts005::get_mc_root_key_for_gen_app_key(lk).unwrap();
        let app = lrwn_ts005::get_mc_root_key_for_app_key(lk).unwrap();
        assert_eq!(mc_root_key(RootKey::GenAppKey(k)), gen.to_bytes());
        assert_eq!(mc_root_key(RootKey::AppKey(k)), app.to_bytes());
        let ke = lrwn_ts005::get_mc_ke_key(gen).unwrap();
        assert_eq!(mc_ke_key(gen.to_bytes()), ke.to_bytes());
        let mc_key = [0x5a; 16];
        assert_eq!(
            encrypted_mc_key(RootKey::GenAppKey(k), mc_key),
            lrwn_ts005::encrypt_mc_key(ke, AES128Key::from_bytes(mc_key))
        );
        let addr = [0x01, 0x02, 0x03, 0x04];
        let (app_s, nwk_s) = session_keys(mc_key, addr);
        let a = DevAddr::from_be_bytes(addr);
        let mk = AES128Key::from_bytes(mc_key);
        assert_eq!(
            app_s,
            lrwn_ts005::get_mc_app_s_key(mk, a).unwrap().to_bytes()
        );
        assert_eq!(
            nwk_s,
            lrwn_ts005::get_mc_net_s_key(mk, a).unwrap().to_bytes()
        );
    }

    #[test]
    fn key_text() {
        assert!(parse_key("03:02:03:04:05:06:07:08:09:0a:0b:0c:0d:0e:0f:10").is_ok());
        assert_eq!(parse_key("0302"), Err(KeyError::Length(4)));
        assert_eq!(
            parse_key("zz02030405060708090a0b0c0d0e0f10"),
            Err(KeyError::NotHex)
        );
    }

    #[test]
    fn root_key_is_stored_by_its_name() {
        let json = serde_json::to_string(&RootKey::AppKey([1; 16])).unwrap();
        assert!(json.starts_with("{\"app_key\":"), "{json}");
        let back: RootKey = serde_json::from_str(&json).unwrap();
        assert_eq!(back, RootKey::AppKey([1; 16]));
    }
}
