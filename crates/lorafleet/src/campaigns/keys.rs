//! TS005 key material: each device's McRootKey, from which the FUOTA service derives the key
//! that protects the multicast key on its way to the device.

use lrwn::applayer::multicastsetup::v1;
use lrwn::AES128Key;

use super::{CampaignKeys, DeviceKey};

/// Parses a 128-bit key written as 32 hex digits (spaces and colons allowed).
pub fn parse_key(text: &str) -> Result<[u8; 16], String> {
    let clean: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    let mut key = [0u8; 16];
    if clean.len() != 32 {
        return Err(format!(
            "a key is 32 hex digits (16 bytes), got {} characters",
            clean.len()
        ));
    }
    hex::decode_to_slice(&clean, &mut key).map_err(|_| "a key is 32 hex digits".to_string())?;
    Ok(key)
}

/// McRootKey for LoRaWAN 1.0.x devices: derived from the GenAppKey.
pub fn mc_root_key_from_gen_app_key(gen_app_key: [u8; 16]) -> [u8; 16] {
    v1::get_mc_root_key_for_gen_app_key(AES128Key::from_bytes(gen_app_key))
        .map(|k| k.to_bytes())
        .unwrap_or([0; 16])
}

/// McRootKey for LoRaWAN 1.1 devices: derived from the AppKey.
pub fn mc_root_key_from_app_key(app_key: [u8; 16]) -> [u8; 16] {
    v1::get_mc_root_key_for_app_key(AES128Key::from_bytes(app_key))
        .map(|k| k.to_bytes())
        .unwrap_or([0; 16])
}

/// The McRootKey of one device from the campaign's key material: its own key if given, else
/// the campaign's GenAppKey. `None` when there is nothing to derive it from.
pub fn mc_root_key(keys: &CampaignKeys, dev_eui: &str, lorawan_version: &str) -> Option<[u8; 16]> {
    match keys.per_device.get(dev_eui) {
        Some(DeviceKey::GenAppKey(k)) => Some(mc_root_key_from_gen_app_key(*k)),
        Some(DeviceKey::AppKey(k)) => Some(mc_root_key_from_app_key(*k)),
        None if lorawan_version == "1.0" => keys.gen_app_key.map(mc_root_key_from_gen_app_key),
        // A LoRaWAN 1.1 device's McRootKey comes from its own AppKey, never a shared key.
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance_vector() {
        // fuota-facts: GenAppKey 0302..10 -> McRootKey 55344e82...
        let gen = parse_key("0302030405060708090a0b0c0d0e0f10").unwrap();
        assert_eq!(
            hex::encode(mc_root_key_from_gen_app_key(gen)),
            "55344e82570eaec8bf03b99962d1f445"
        );
    }

    #[test]
    fn app_key_uses_the_1_1_block() {
        let k = [7u8; 16];
        assert_ne!(mc_root_key_from_app_key(k), mc_root_key_from_gen_app_key(k));
    }

    #[test]
    fn key_text() {
        assert!(parse_key("03:02:03:04:05:06:07:08:09:0a:0b:0c:0d:0e:0f:10").is_ok());
        assert!(parse_key("0302").is_err());
        assert!(parse_key("zz02030405060708090a0b0c0d0e0f10").is_err());
    }

    #[test]
    fn per_device_key_wins() {
        let mut keys = CampaignKeys {
            gen_app_key: Some([1; 16]),
            ..Default::default()
        };
        keys.per_device
            .insert("0102030405060708".into(), DeviceKey::AppKey([2; 16]));
        assert_eq!(
            mc_root_key(&keys, "0102030405060708", "1.0"),
            Some(mc_root_key_from_app_key([2; 16]))
        );
        assert_eq!(
            mc_root_key(&keys, "0000000000000001", "1.0"),
            Some(mc_root_key_from_gen_app_key([1; 16]))
        );
        assert_eq!(mc_root_key(&keys, "0000000000000001", "1.1"), None);
    }
}
