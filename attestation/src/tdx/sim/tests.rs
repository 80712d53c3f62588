//! Tests of the simulated Intel PKI: determinism and its directory.

use std::time::SystemTime;

use crate::tdx::sim;
use crate::tdx::test_support::*;
use crate::tdx::*;

#[test]
fn same_seed_gives_the_same_pki_and_quotes() {
    let again = SimTdxPki::from_seed(b"tdx unit tests").unwrap();
    assert_eq!(again.root_der(), pki().root_der());
    assert_eq!(again.pck_chain_pem(), pki().pck_chain_pem());
    assert_eq!(again.quote(&td()).unwrap(), pki().quote(&td()).unwrap());
}

#[test]
fn sim_pki_files_round_trip() {
    let dir = tempdir("pki-files");
    pki().write_to(&dir, SystemTime::now()).unwrap();
    let loaded = SimTdxPki::load(&dir).unwrap();
    assert_eq!(loaded.root_der(), pki().root_der());
    let collateral = Collateral::load(&dir.join(sim::files::COLLATERAL)).unwrap();
    sim_verifier()
        .verify(
            &loaded.quote(&td()).unwrap(),
            &collateral,
            SystemTime::now(),
        )
        .unwrap();
    // A root that does not belong to the seed is refused.
    let other = SimTdxPki::from_seed(b"x").unwrap();
    std::fs::write(dir.join(sim::files::ROOT_CA), other.root_pem()).unwrap();
    assert!(matches!(SimTdxPki::load(&dir), Err(TdxError::SimPki(_))));
    std::fs::remove_dir_all(&dir).unwrap();
}
