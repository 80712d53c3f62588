use super::*;
use crate::snp::SimSnpAttester;
use crate::tdx::{SimTdReport, SimTdxAttester};

fn snp(measurement: u8) -> SimSnpAttester {
    SimSnpAttester::new(crate::test_support::pki(), [measurement; 48], [0; 32])
}

fn sealer(attester: &dyn Attester) -> Sealer {
    Sealer::for_attester(attester).unwrap()
}

#[test]
fn the_same_tee_unseals_after_a_restart_and_the_host_sees_no_plaintext() {
    let secret = [0x5a; 32];
    let sealed = sealer(&snp(1)).seal("wireguard", &secret).unwrap();
    assert!(sealed.starts_with(b"tg-seal1"));
    assert!(
        !sealed.windows(8).any(|w| w == &secret[..8]),
        "no plaintext in the sealed bytes"
    );
    // A new sealer (a restarted process) of the same TEE reads it.
    let again = sealer(&snp(1));
    assert!(again.is_durable());
    assert_eq!(
        again.unseal("wireguard", &sealed).unwrap().as_slice(),
        &secret
    );
    // Two seals of one value differ (random nonce).
    assert_ne!(sealed, again.seal("wireguard", &secret).unwrap());
}

#[test]
fn another_image_or_a_debuggable_launch_cannot_unseal() {
    let sealed = sealer(&snp(1)).seal("wireguard", b"secret").unwrap();
    let other_image = sealer(&snp(2)).unseal("wireguard", &sealed).unwrap_err();
    assert!(
        matches!(other_image, SealError::Unauthentic { .. }),
        "{other_image}"
    );
    let mut debug = snp(1);
    debug.debug = true;
    let err = sealer(&debug).unseal("wireguard", &sealed).unwrap_err();
    assert!(matches!(err, SealError::Unauthentic { .. }), "{err}");
}

#[test]
fn altered_bytes_and_other_names_are_refused() {
    let s = sealer(&snp(1));
    let sealed = s.seal("wireguard", b"secret").unwrap();
    for i in HEADER_LEN..sealed.len() {
        let mut altered = sealed.clone();
        altered[i] ^= 1;
        let err = s.unseal("wireguard", &altered).unwrap_err();
        assert!(
            matches!(err, SealError::Unauthentic { .. }),
            "byte {i}: {err}"
        );
    }
    let err = s.unseal("acme-account", &sealed).unwrap_err();
    assert!(matches!(err, SealError::Unauthentic { .. }), "{err}");
    let err = s.unseal("wireguard", &sealed[..20]).unwrap_err();
    assert!(matches!(err, SealError::Malformed { .. }), "{err}");
    let err = s.unseal("wireguard", &[0u8; 32]).unwrap_err();
    assert!(
        matches!(err, SealError::Malformed { .. }),
        "plaintext is not sealed: {err}"
    );
}

#[test]
fn tdx_seals_in_memory_only_and_says_so_after_a_restart() {
    let td = SimTdxAttester::new(
        std::sync::Arc::new(crate::SimTdxPki::from_seed(b"sealing tests").unwrap()),
        SimTdReport::default(),
    );
    let s = sealer(&td);
    assert!(!s.is_durable());
    assert_eq!(s.describe(), "memory-only");
    let sealed = s.seal("wireguard", b"secret").unwrap();
    assert_eq!(
        s.unseal("wireguard", &sealed).unwrap().as_slice(),
        b"secret"
    );
    let err = sealer(&td).unseal("wireguard", &sealed).unwrap_err();
    assert!(matches!(err, SealError::Ephemeral { .. }), "{err}");
    // Neither does an SNP sealer read it, nor a memory-only one SNP's.
    let err = sealer(&snp(1)).unseal("wireguard", &sealed).unwrap_err();
    assert!(matches!(err, SealError::Ephemeral { .. }), "{err}");
    let from_snp = sealer(&snp(1)).seal("wireguard", b"secret").unwrap();
    let err = s.unseal("wireguard", &from_snp).unwrap_err();
    assert!(matches!(err, SealError::OtherPlatform { .. }), "{err}");
}
