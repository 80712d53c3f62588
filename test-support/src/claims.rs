//! Verified-claims values for tests that need claims without producing and verifying evidence.

use attestation::{Claims, Platform, PlatformClaims, SigningKeyKind, SnpClaims, SnpProduct};

/// Simulated SEV-SNP claims (Milan, VCEK-signed, default TCBs, not debug) with `measurement` in every byte of the
/// launch measurement.
pub fn sim_snp(measurement: u8) -> Claims {
    Claims {
        platform: Platform::SimSnp,
        report_data: [0; 64],
        debug: false,
        details: PlatformClaims::Snp(SnpClaims {
            product: SnpProduct::Milan,
            report_version: 3,
            measurement: [measurement; 48],
            host_data: [0; 32],
            guest_policy: 0x30000,
            guest_svn: 0,
            vmpl: 0,
            family_id: [0; 16],
            image_id: [0; 16],
            id_key_digest: [0; 48],
            reported_tcb: Default::default(),
            current_tcb: Default::default(),
            committed_tcb: Default::default(),
            launch_tcb: Default::default(),
            chip_id: [0; 64],
            signing_key: SigningKeyKind::Vcek,
        }),
    }
}
