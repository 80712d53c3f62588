use super::*;
use crate::claims::fixtures::sim_snp;

fn key(n: u8) -> OwnerKey {
    OwnerKey::from_seed([n; 32])
}

/// A simulated SEV-SNP profile accepting the measurement `[m; 48]` ([`sim_snp`]`(m)`).
fn profiles(m: u8) -> Vec<crate::policy::Profile> {
    let text = format!(
        "[[profile]]\nplatform = \"sim-snp\"\nmeasurement = \"{}\"\nmin_tcb = {{ bootloader = 0 }}\n",
        hex::encode([m; 48])
    );
    ProfilesFile::from_toml(&text).unwrap().profile
}

#[test]
fn app_ids_are_32_hex_digits_derived_from_the_key_and_valid_ids() {
    let id = key(1).app_id();
    assert_eq!(id.len(), 32);
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{id}"
    );
    assert_eq!(id, app_id_of(&key(1).public()));
    assert_ne!(id, key(2).app_id());
    // Fixed: a change of label or hash would rename every app.
    assert_eq!(id, OwnerKey::from_seed([1; 32]).app_id());
}

#[test]
fn a_signed_policy_verifies_and_admits_what_it_lists() {
    let signed = SignedPolicy::sign(&key(1), 3, profiles(7)).unwrap();
    let again = SignedPolicy::from_json(&signed.to_json()).unwrap();
    let verified = again.verify_for(&key(1).app_id()).unwrap();
    assert_eq!(verified.version(), 3);
    assert_eq!(verified.app_id(), key(1).app_id());
    assert_eq!(verified.profiles(), profiles(7).as_slice());
    verified.check(&sim_snp(7)).unwrap();
    let refused = verified.check(&sim_snp(8)).unwrap_err().to_string();
    assert!(refused.contains("measurement not allowed"), "{refused}");
    assert!(refused.contains("owner policy version 3"), "{refused}");
}

#[test]
fn a_signature_by_another_key_is_refused() {
    let mut signed = SignedPolicy::sign(&key(2), 1, profiles(7)).unwrap();
    // Claims to be key 1's policy: key 1's public key and app id, key 2's signature.
    let body = PolicyBody {
        app_id: key(1).app_id(),
        version: 1,
        profile: profiles(7),
    };
    signed.policy = serde_json::to_string(&body).unwrap();
    signed.owner_key = key(1).public().to_hex();
    assert!(matches!(signed.verify(), Err(OwnerError::BadSignature)));
}

#[test]
fn an_altered_profile_is_refused() {
    let signed = SignedPolicy::sign(&key(1), 1, profiles(7)).unwrap();
    let mut altered = signed.clone();
    altered.policy = altered
        .policy
        .replace(&hex::encode([7u8; 48]), &hex::encode([9u8; 48]));
    assert_ne!(altered.policy, signed.policy);
    assert!(matches!(altered.verify(), Err(OwnerError::BadSignature)));
    let mut version = signed.clone();
    version.policy = version.policy.replace("\"version\":1", "\"version\":2");
    assert!(matches!(version.verify(), Err(OwnerError::BadSignature)));
}

#[test]
fn a_policy_signed_by_another_key_for_this_app_id_is_refused() {
    // Key 2 signs, correctly, a policy naming key 1's app: the signature verifies, the key does not own the app.
    let body = PolicyBody {
        app_id: key(1).app_id(),
        version: 9,
        profile: profiles(7),
    };
    let signed = SignedPolicy::sign_bytes(&key(2), serde_json::to_string(&body).unwrap());
    match signed.verify() {
        Err(OwnerError::NotOwnersKey { app_id, key_app_id }) => {
            assert_eq!(app_id, key(1).app_id());
            assert_eq!(key_app_id, key(2).app_id());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_policy_brought_for_another_app_is_refused() {
    let signed = SignedPolicy::sign(&key(2), 1, profiles(7)).unwrap();
    assert!(matches!(
        signed.verify_for(&key(1).app_id()),
        Err(OwnerError::OtherApp { .. })
    ));
}

#[test]
fn the_signature_is_domain_separated() {
    // A bare Ed25519 signature over the policy bytes (without the label) is not a policy signature.
    let signed = SignedPolicy::sign(&key(1), 1, profiles(7)).unwrap();
    let bare = hex::encode(key(1).sign(signed.policy.as_bytes()));
    let forged = SignedPolicy {
        signature: bare,
        ..signed
    };
    assert!(matches!(forged.verify(), Err(OwnerError::BadSignature)));
}

#[test]
fn malformed_documents_are_refused_with_their_reason() {
    assert!(matches!(
        SignedPolicy::from_json("{"),
        Err(OwnerError::Document(_))
    ));
    let mut signed = SignedPolicy::sign(&key(1), 1, profiles(7)).unwrap();
    signed.format = "tee-gateway/app-policy/v0".into();
    assert!(matches!(signed.verify(), Err(OwnerError::Format(_))));
    let unsigned_body = SignedPolicy::sign_bytes(&key(1), "{\"app_id\": 1}".into());
    assert!(matches!(unsigned_body.verify(), Err(OwnerError::Body(_))));
}

#[test]
fn key_files_round_trip_and_are_checked() {
    let k = OwnerKey::generate();
    let text = k.to_file_text();
    assert!(text.contains(&k.app_id()), "{text}");
    let back = OwnerKey::from_file_text(&text).unwrap();
    assert_eq!(back.public(), k.public());
    let other = text.replace(&k.app_id(), &key(3).app_id());
    assert!(matches!(
        OwnerKey::from_file_text(&other),
        Err(OwnerError::KeyFile(_))
    ));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("owner.key");
    k.write_new(&path).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(OwnerKey::read(&path).unwrap().public(), k.public());
    assert!(matches!(k.write_new(&path), Err(OwnerError::Io { .. })));
}
