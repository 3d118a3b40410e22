//! The 113-byte trailer at the end of a signed firmware package.
//!
//! Packed layout, multi-byte integers little-endian unless noted:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | signature_length |
//! | 1 | 72 | signature (DER ECDSA-P256/SHA-256; first `signature_length` bytes valid) |
//! | 73 | 16 | manufacturer UUID |
//! | 89 | 16 | device-class UUID |
//! | 105 | 4 | version (u32 LE, typically a Unix build timestamp) |
//! | 109 | 1 | diff kind: 0 full, 1 JDIFF, 2 DDELTA |
//! | 110 | 3 | old firmware size, 24-bit **big-endian** |

use thiserror::Error;

/// Length of the trailer in bytes.
pub const TRAILER_LEN: usize = 113;
/// Room reserved for the signature inside the trailer.
pub const SIGNATURE_CAPACITY: usize = 72;
/// Largest old-firmware size the 24-bit field can carry.
pub const MAX_OLD_FIRMWARE_SIZE: u32 = 0x00ff_ffff;

const SIGNATURE_AT: usize = 1;
const MANUFACTURER_AT: usize = SIGNATURE_AT + SIGNATURE_CAPACITY;
const DEVICE_CLASS_AT: usize = MANUFACTURER_AT + 16;
const VERSION_AT: usize = DEVICE_CLASS_AT + 16;
const DIFF_AT: usize = VERSION_AT + 4;

/// What the package body contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PackageKind {
    /// 0: a complete firmware image.
    Full,
    /// 1: a JDIFF (janpatch) delta against the old firmware.
    JdiffDelta,
    /// 2: a DDELTA delta (usually arithmetic-compressed).
    DdeltaDelta,
}

impl PackageKind {
    /// The diff_info\[0\] code.
    pub fn code(self) -> u8 {
        match self {
            PackageKind::Full => 0,
            PackageKind::JdiffDelta => 1,
            PackageKind::DdeltaDelta => 2,
        }
    }

    /// Parses a diff_info\[0\] code.
    pub fn from_code(code: u8) -> Result<PackageKind, TrailerError> {
        match code {
            0 => Ok(PackageKind::Full),
            1 => Ok(PackageKind::JdiffDelta),
            2 => Ok(PackageKind::DdeltaDelta),
            kind => Err(TrailerError::UnknownDiffKind { kind }),
        }
    }

    /// Whether the body must be applied to an existing image.
    pub fn is_delta(self) -> bool {
        self != PackageKind::Full
    }
}

/// The decoded trailer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SignedTrailer {
    /// The valid signature bytes (`signature_length` of them, at most 72).
    pub signature: Vec<u8>,
    /// Manufacturer UUID, bytes as stored.
    pub manufacturer_uuid: [u8; 16],
    /// Device-class UUID, bytes as stored.
    pub device_class_uuid: [u8; 16],
    /// Firmware version, typically a Unix build timestamp.
    pub version: u32,
    /// Full image or which delta format.
    pub kind: PackageKind,
    /// Size of the firmware a delta applies to (0..=2^24-1).
    pub old_firmware_size: u32,
}

/// Why a trailer could not be parsed or built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TrailerError {
    /// The package is shorter than the trailer itself.
    #[error("package is {len} bytes, shorter than the {TRAILER_LEN}-byte signed trailer")]
    TooShort {
        /// Package length.
        len: usize,
    },
    /// signature_length exceeds the 72 bytes reserved for it.
    #[error("signature length {len} exceeds the {SIGNATURE_CAPACITY} bytes reserved for it")]
    SignatureTooLong {
        /// Claimed or given signature length.
        len: usize,
    },
    /// diff_info\[0\] is not 0, 1 or 2.
    #[error("unknown diff kind {kind} (expected 0 full, 1 JDIFF or 2 DDELTA)")]
    UnknownDiffKind {
        /// The code found.
        kind: u8,
    },
    /// The old firmware size does not fit 24 bits.
    #[error("old firmware size {size} does not fit the 24-bit field")]
    OldSizeTooLarge {
        /// The size given.
        size: u32,
    },
}

/// Length of the package body (what precedes the trailer), or `None` if the
/// package cannot even hold a trailer.
pub fn payload_len(package_len: usize) -> Option<usize> {
    package_len.checked_sub(TRAILER_LEN)
}

/// Parses the trailer at the end of `package`.
pub fn parse(package: &[u8]) -> Result<SignedTrailer, TrailerError> {
    split(package).map(|(_, t)| t)
}

/// The trailer of `image`, if it looks like a signed package.
///
/// Any 113 bytes parse structurally often enough to matter (a length byte <= 72 and a kind
/// byte <= 2), so a tail only counts as a trailer when its signature is shaped like the DER
/// ECDSA signature the signing tool writes: `Ok(None)` means "not a signed package",
/// `Err` means "looks signed but a field is invalid".
pub fn detect(image: &[u8]) -> Result<Option<SignedTrailer>, TrailerError> {
    let Some(body_len) = payload_len(image.len()) else {
        return Ok(None);
    };
    let raw = &image[body_len..];
    let sig_len = usize::from(raw[0]);
    let der_like =
        (8..=72).contains(&sig_len) && raw[1] == 0x30 && usize::from(raw[2]) + 2 == sig_len;
    if !der_like {
        return Ok(None);
    }
    parse(raw).map(Some)
}

/// Splits a package into its body and parsed trailer.
pub fn split(package: &[u8]) -> Result<(&[u8], SignedTrailer), TrailerError> {
    let too_short = TrailerError::TooShort { len: package.len() };
    let body_len = payload_len(package.len()).ok_or(too_short.clone())?;
    let (body, raw) = package
        .split_at_checked(body_len)
        .ok_or(too_short.clone())?;
    let raw: &[u8; TRAILER_LEN] = raw.try_into().map_err(|_| too_short)?;

    let sig_len = usize::from(raw[0]);
    if sig_len > SIGNATURE_CAPACITY {
        return Err(TrailerError::SignatureTooLong { len: sig_len });
    }
    let signature = raw[SIGNATURE_AT..SIGNATURE_AT + sig_len].to_vec();
    let mut manufacturer_uuid = [0u8; 16];
    manufacturer_uuid.copy_from_slice(&raw[MANUFACTURER_AT..DEVICE_CLASS_AT]);
    let mut device_class_uuid = [0u8; 16];
    device_class_uuid.copy_from_slice(&raw[DEVICE_CLASS_AT..VERSION_AT]);
    let version = u32::from_le_bytes([
        raw[VERSION_AT],
        raw[VERSION_AT + 1],
        raw[VERSION_AT + 2],
        raw[VERSION_AT + 3],
    ]);
    let kind = PackageKind::from_code(raw[DIFF_AT])?;
    // Unlike everything else in the trailer, the old size is big-endian.
    let old_firmware_size =
        u32::from_be_bytes([0, raw[DIFF_AT + 1], raw[DIFF_AT + 2], raw[DIFF_AT + 3]]);

    Ok((
        body,
        SignedTrailer {
            signature,
            manufacturer_uuid,
            device_class_uuid,
            version,
            kind,
            old_firmware_size,
        },
    ))
}

/// Serialises a trailer to its 113 bytes; the unused signature tail is zero.
pub fn encode_trailer(t: &SignedTrailer) -> Result<[u8; TRAILER_LEN], TrailerError> {
    let sig_len = t.signature.len();
    let sig_len_byte = u8::try_from(sig_len)
        .ok()
        .filter(|&l| usize::from(l) <= SIGNATURE_CAPACITY)
        .ok_or(TrailerError::SignatureTooLong { len: sig_len })?;
    if t.old_firmware_size > MAX_OLD_FIRMWARE_SIZE {
        return Err(TrailerError::OldSizeTooLarge {
            size: t.old_firmware_size,
        });
    }
    let mut raw = [0u8; TRAILER_LEN];
    raw[0] = sig_len_byte;
    raw[SIGNATURE_AT..SIGNATURE_AT + sig_len].copy_from_slice(&t.signature);
    raw[MANUFACTURER_AT..DEVICE_CLASS_AT].copy_from_slice(&t.manufacturer_uuid);
    raw[DEVICE_CLASS_AT..VERSION_AT].copy_from_slice(&t.device_class_uuid);
    raw[VERSION_AT..DIFF_AT].copy_from_slice(&t.version.to_le_bytes());
    let [_, s2, s1, s0] = t.old_firmware_size.to_be_bytes();
    raw[DIFF_AT..].copy_from_slice(&[t.kind.code(), s2, s1, s0]);
    Ok(raw)
}

/// Appends the trailer to `payload`, checking the trailer's fields first.
pub fn try_build(payload: &[u8], t: &SignedTrailer) -> Result<Vec<u8>, TrailerError> {
    let raw = encode_trailer(t)?;
    let mut out = Vec::with_capacity(payload.len() + TRAILER_LEN);
    out.extend_from_slice(payload);
    out.extend_from_slice(&raw);
    Ok(out)
}

/// Appends the trailer to `payload` (for generating demo images; the
/// signature bytes are taken as given, nothing is signed here).
///
/// # Panics
/// If the signature is longer than 72 bytes or the old firmware size does not
/// fit 24 bits: both are programming errors for a builder. Use [`try_build`]
/// for untrusted trailers.
pub fn build(payload: &[u8], t: &SignedTrailer) -> Vec<u8> {
    match try_build(payload, t) {
        Ok(v) => v,
        Err(e) => panic!("invalid signed trailer: {e}"),
    }
}

/// Formats a UUID as lowercase 8-4-4-4-12 hex, bytes in stored order.
pub fn format_uuid(uuid: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in uuid.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FIXTURE: &[u8] = include_bytes!("../tests/fixtures/patch_demo_jdiff_v1v2.bin_signed");

    #[test]
    fn real_fixture() {
        assert_eq!(FIXTURE.len(), 22_832);
        let (body, t) = split(FIXTURE).unwrap();
        assert_eq!(body.len(), 22_832 - TRAILER_LEN);
        assert_eq!(payload_len(FIXTURE.len()), Some(body.len()));
        assert_eq!(t.kind, PackageKind::JdiffDelta);
        assert!(t.kind.is_delta());
        assert_eq!(t.version, 1_623_165_310);
        assert_eq!(
            crate::time::rfc3339_from_unix(t.version.into()),
            "2021-06-08T15:15:10Z"
        );
        assert_eq!(t.old_firmware_size, 254_140);
        assert_eq!(t.signature.len(), 71);
        assert_eq!(
            hex::encode(&t.signature),
            "3045022050d143fd5d03bcc86aca76868f8c198a79a1de585114ad05680a83fa695b682f\
             022100e64e50643b5575adc9a8e956f74eef4022b1f9c60446a2478f76a0646fe034a6"
        );
        // A DER ECDSA signature: SEQUENCE of the announced length.
        assert_eq!(t.signature[0], 0x30);
        assert_eq!(usize::from(t.signature[1]) + 2, t.signature.len());
        assert_eq!(
            format_uuid(&t.manufacturer_uuid),
            "ee33927e-e985-577b-ae88-fe98f5a4b587"
        );
        assert_eq!(
            format_uuid(&t.device_class_uuid),
            "22c3fa46-b797-595f-bd1d-2c18133d421f"
        );
        // Rebuilding from the parsed fields reproduces the file byte for byte
        // (its unused signature tail is zero).
        assert_eq!(build(body, &t), FIXTURE);
    }

    #[test]
    fn detect_takes_only_der_shaped_signatures() {
        let t = detect(FIXTURE).unwrap().unwrap();
        assert_eq!(t.version, 1_623_165_310);
        assert_eq!(
            detect(&FIXTURE[..TRAILER_LEN - 1]).unwrap(),
            None,
            "too short"
        );
        // Parses structurally, but the signature is no DER SEQUENCE: not a signed package.
        let plain = build(&[0; 10], &sample());
        assert!(parse(&plain).is_ok());
        assert_eq!(detect(&plain).unwrap(), None);
        // DER-shaped, with an invalid kind: looks signed, and says what is wrong.
        let mut bad = FIXTURE.to_vec();
        let kind_at = FIXTURE.len() - TRAILER_LEN + DIFF_AT;
        bad[kind_at] = 7;
        assert!(matches!(
            detect(&bad),
            Err(TrailerError::UnknownDiffKind { kind: 7 })
        ));
    }

    fn sample() -> SignedTrailer {
        SignedTrailer {
            signature: vec![0xab; 70],
            manufacturer_uuid: [1; 16],
            device_class_uuid: [2; 16],
            version: 0x0102_0304,
            kind: PackageKind::DdeltaDelta,
            old_firmware_size: 0x00ab_cdef,
        }
    }

    #[test]
    fn build_layout() {
        let pkg = build(b"body", &sample());
        assert_eq!(pkg.len(), 4 + TRAILER_LEN);
        let raw = &pkg[4..];
        assert_eq!(raw[0], 70);
        assert_eq!(&raw[71..73], &[0, 0]);
        assert_eq!(&raw[105..109], &[4, 3, 2, 1]);
        assert_eq!(&raw[109..], &[2, 0xab, 0xcd, 0xef]);
        assert_eq!(split(&pkg).unwrap(), (&b"body"[..], sample()));
    }

    #[test]
    fn errors() {
        assert_eq!(parse(&[0; 112]), Err(TrailerError::TooShort { len: 112 }));
        assert_eq!(payload_len(112), None);
        let mut pkg = build(&[], &sample());
        pkg[0] = 73;
        assert_eq!(parse(&pkg), Err(TrailerError::SignatureTooLong { len: 73 }));
        pkg[0] = 72;
        assert_eq!(parse(&pkg).unwrap().signature.len(), 72);
        for kind in 3..=255u8 {
            pkg[109] = kind;
            assert_eq!(parse(&pkg), Err(TrailerError::UnknownDiffKind { kind }));
        }
        let mut t = sample();
        t.signature = vec![0; 73];
        assert_eq!(
            try_build(&[], &t),
            Err(TrailerError::SignatureTooLong { len: 73 })
        );
        let mut t = sample();
        t.old_firmware_size = 1 << 24;
        assert!(matches!(
            try_build(&[], &t),
            Err(TrailerError::OldSizeTooLarge { .. })
        ));
    }

    #[test]
    fn uuid_format() {
        let u: [u8; 16] = core::array::from_fn(|i| i as u8);
        assert_eq!(format_uuid(&u), "00010203-0405-0607-0809-0a0b0c0d0e0f");
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn round_trip(
            body in proptest::collection::vec(any::<u8>(), 0..64),
            sig in proptest::collection::vec(any::<u8>(), 0..=72),
            m in any::<[u8; 16]>(),
            d in any::<[u8; 16]>(),
            version in any::<u32>(),
            kind in 0u8..3,
            old in 0u32..=MAX_OLD_FIRMWARE_SIZE,
        ) {
            let t = SignedTrailer {
                signature: sig,
                manufacturer_uuid: m,
                device_class_uuid: d,
                version,
                kind: PackageKind::from_code(kind).unwrap(),
                old_firmware_size: old,
            };
            let pkg = try_build(&body, &t).unwrap();
            prop_assert_eq!(split(&pkg).unwrap(), (&body[..], t));
        }
    }
}
