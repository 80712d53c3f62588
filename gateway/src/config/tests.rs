use super::*;

fn minimal(policy: &Path) -> String {
    format!(
        r#"
base_domains = ["apps.example.com"]
[tunnel]
public_endpoint = "198.18.0.2:51820"
[attestation]
app_policy = "{}"
"#,
        policy.display()
    )
}

fn policy_file() -> tempfile_like::TempFile {
    tempfile_like::TempFile::new("apps.toml", "")
}

/// A tiny temporary file helper (no extra dependency).
mod tempfile_like {
    use std::path::{Path, PathBuf};

    pub(crate) struct TempFile(PathBuf);

    impl TempFile {
        pub(crate) fn new(name: &str, contents: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "tg-config-test-{}-{}",
                std::process::id(),
                rand::random::<u64>()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(name);
            std::fs::write(&path, contents).unwrap();
            Self(path)
        }
        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

#[test]
fn minimal_file_gets_documented_defaults() {
    let policy = policy_file();
    let c = GatewayConfig::parse(&minimal(policy.path())).unwrap();
    assert!(c.problems().is_empty(), "{:?}", c.problems());
    assert_eq!(c.tunnel.network.to_string(), "10.0.0.0/8");
    assert_eq!(c.tunnel.gateway_address, Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(c.tunnel.listen_port, 51820);
    assert_eq!(c.tunnel.keepalive_secs, 25);
    assert_eq!(c.tunnel.health_window_secs, 300);
    assert_eq!(c.registry.expire_after_secs, 86400);
    assert_eq!(c.attestation.settings.backend, AttestationBackend::Auto);
    assert_eq!(c.control.listen.port(), 8443);
}

#[test]
fn unknown_keys_are_errors() {
    let policy = policy_file();
    let text = minimal(policy.path()).replace("[tunnel]", "[tunnel]\nlisten_prot = 1");
    let e = GatewayConfig::parse(&text).unwrap_err().to_string();
    assert!(e.contains("listen_prot"), "{e}");
    let text = format!("{}\n[bogus]\nx = 1\n", minimal(policy.path()));
    assert!(GatewayConfig::parse(&text)
        .unwrap_err()
        .to_string()
        .contains("bogus"));
}

#[test]
fn bad_values_are_each_reported() {
    let policy = policy_file();
    let text = format!(
        r#"
base_domains = ["ok.example"]
[tunnel]
network = "10.1.0.0/16"
gateway_address = "10.0.0.1"
public_endpoint = "198.18.0.2:51820"
[registry]
expire_after_secs = 5
[attestation]
backend = "sim-snp"
app_policy = "{}"
tdx_collateral_dir = "/nonexistent/tdx-collateral"
"#,
        policy.path().display()
    );
    let c = GatewayConfig::parse(&text).unwrap();
    let p = c.problems().join("\n");
    for needle in [
        "gateway_address",
        "expire_after_secs",
        "sim_pki",
        "tdx_collateral_dir: /nonexistent/tdx-collateral is not a directory",
    ] {
        assert!(p.contains(needle), "missing {needle} in:\n{p}");
    }
    assert!(!p.contains("ok.example"), "{p}");
}

/// Values with rules of their own are refused while parsing, so `check-config` and `run` cannot disagree on them
/// (an MTU of 4000 passed `check-config` once and then failed when the tunnel started).
#[test]
fn bad_names_interface_and_mtu_are_parse_errors() {
    let policy = policy_file();
    let base = minimal(policy.path());
    for (from, to, needle) in [
        (
            "[tunnel]",
            "[tunnel]\nmtu = 4000",
            "mtu = 4000 is outside 1280..=2000",
        ),
        ("[tunnel]", "[tunnel]\nmtu = 100", "mtu = 100 is outside"),
        (
            "[tunnel]",
            "[tunnel]\ninterface = \"a/b\"",
            "\"a/b\" is not a valid interface name",
        ),
        (
            "\"apps.example.com\"",
            "\"bad domain\", \"ok.example\"",
            "\"bad domain\" has a label",
        ),
        (
            "198.18.0.2:51820",
            "nowhere",
            "\"nowhere\" must be host:port",
        ),
    ] {
        let text = base.replacen(from, to, 1);
        assert_ne!(text, base, "{from}");
        let e = GatewayConfig::parse(&text).unwrap_err().to_string();
        assert!(e.contains(needle), "{needle} missing in: {e}");
        let file = tempfile_like::TempFile::new("gateway.toml", &text);
        let e = GatewayConfig::load(file.path()).unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
    }
    let ok = GatewayConfig::parse(&base.replacen("[tunnel]", "[tunnel]\nmtu = 2000", 1)).unwrap();
    assert_eq!(ok.tunnel.mtu.get(), 2000);
}

#[test]
fn bad_network_and_backend_are_parse_errors() {
    let policy = policy_file();
    let text = minimal(policy.path()).replace("[tunnel]", "[tunnel]\nnetwork = \"10.0.0.1/8\"");
    assert!(GatewayConfig::parse(&text)
        .unwrap_err()
        .to_string()
        .contains("did you mean 10.0.0.0/8"));
    let text = minimal(policy.path()).replace("[attestation]", "[attestation]\nbackend = \"sgx\"");
    assert!(GatewayConfig::parse(&text)
        .unwrap_err()
        .to_string()
        .contains("sgx"));
}

#[test]
fn load_reports_missing_files_and_problems() {
    let missing = Path::new("/nonexistent/gateway.toml");
    assert!(matches!(
        GatewayConfig::load(missing),
        Err(ConfigError::Read { .. })
    ));
    let text = minimal(Path::new("/nonexistent/apps.toml"));
    let file = tempfile_like::TempFile::new("gateway.toml", &text);
    let e = GatewayConfig::load(file.path()).unwrap_err();
    assert!(
        matches!(&e, ConfigError::Invalid { problems, .. } if problems.len() == 1),
        "{e}"
    );
    assert!(e.to_string().contains("app_policy"), "{e}");
}

/// An operator who adds a simulated root to a gateway on real hardware would let anyone with that simulated PKI
/// register as an attested CVM: refused, unless the insecure key says it is meant.
#[test]
fn simulated_roots_on_a_real_backend_need_the_insecure_key() {
    let policy = policy_file();
    let with = |extra: &str| {
        let text = minimal(policy.path()).replace(
            "[attestation]\n",
            &format!("[attestation]\ntrusted_sim_roots = [\"/etc/tee-gateway/sim-pki\"]\n{extra}"),
        );
        GatewayConfig::parse(&text).unwrap().problems().join("\n")
    };
    let refused = with("");
    assert!(
        refused.contains("auto backend is a real TEE")
            && refused.contains("insecure_trust_sim_roots_on_real_tee"),
        "{refused}"
    );
    assert!(!with("insecure_trust_sim_roots_on_real_tee = true\n").contains("real TEE"));
    assert!(!with("backend = \"sim-snp\"\nsim_pki = \"/nowhere\"\n").contains("real TEE"));
}
