//! The proxy as a service, with real clients (curl, openssl s_client) and backends on loopback: graceful
//! shutdown, the admin API (token, listing, drain, metrics, certificate reloads), the gateway's own attestation on
//! its reserved name, and the service's start and stop.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use support::*;
use test_support::clients::{admin_answer, admin_args};
use test_support::wait_until;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_open_connections_finish_then_closes_the_rest() {
    let (_pki, backend, gw) = one_backend(BackendKind::Record).await;
    let addr = gw.addr;
    let name = format!("{APP}-{}s.{BASE}", backend.addr.port());
    let mut open = connect(addr).await;
    open.write_all(&records(&client_hello_message(Some(&name), 0), 16384))
        .await
        .unwrap();
    let accepted = backend.accepted.clone();
    wait_until(Duration::from_secs(5), "the connection routed", || {
        let n = accepted.load(Ordering::SeqCst);
        async move { Ok((n == 1).then_some(())) }
    })
    .await
    .unwrap();
    let grace = Duration::from_secs(gw.proxy.config().shutdown_grace_secs);
    let stopping = tokio::spawn(gw.stop());
    wait_until(
        Duration::from_secs(2),
        "the listener closed",
        || async move {
            Ok(tokio::net::TcpStream::connect(addr)
                .await
                .is_err()
                .then_some(()))
        },
    )
    .await
    .unwrap();
    // No new connections once shutdown began.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    // The open connection still works within the grace period.
    open.write_all(b"more").await.unwrap();
    let took = stopping.await.unwrap();
    assert!(
        took >= grace - Duration::from_millis(300) && took < grace + Duration::from_secs(1),
        "{took:?}"
    );
    let (_, _, closed) = read_answer(&mut open, Duration::from_secs(2)).await;
    assert!(closed, "the connection is closed after the grace period");
}

async fn admin_curl(
    admin: std::net::SocketAddr,
    token: Option<&str>,
    method: &str,
    path: &str,
) -> (u16, String) {
    let out = tokio::process::Command::new("curl")
        .args(admin_args(method, &format!("http://{admin}{path}"), token))
        .output()
        .await
        .unwrap();
    admin_answer(&out).unwrap()
}

/// The subject CN of the certificate the proxy presents for `name`.
fn presented_cn(pki: &Pki, gw: std::net::SocketAddr, name: &str) -> String {
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &gw.to_string(),
            "-servername",
            name,
            "-CAfile",
        ])
        .arg(&pki.ca_pem)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("subject=CN = ")
                .or_else(|| l.strip_prefix("subject=CN="))
        })
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_needs_its_token_lists_drains_reloads_and_serves_metrics() {
    use gateway::proxy::admin;
    let pki = Pki::new();
    let backend = Backend::start(I1, BackendKind::Http).await;
    let mut config = test_config(&pki);
    config.cert_reload_interval_secs = 1;
    let cert_files = config.certificates[0].clone();
    let gw = Running::start(config, one_instance(backend.addr, false)).await;
    let name = format!("{APP}-{}.{BASE}", backend.addr.port());

    // No token: refuses to start. A short token: refused too.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rx = tokio_util::sync::CancellationToken::new();
    let err = admin::serve(gw.proxy.clone(), l, None, rx.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, admin::AdminError::NoToken), "{err}");
    assert!(matches!(
        admin::router(gw.proxy.clone(), "short"),
        Err(admin::AdminError::WeakToken)
    ));

    let token = "0123456789abcdef-admin-token";
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = l.local_addr().unwrap();
    let server = tokio::spawn(admin::serve(gw.proxy.clone(), l, Some(token.into()), rx));
    // A request with the token.
    let authorized = |method: &'static str, path: String| async move {
        admin_curl(admin_addr, Some(token), method, &path).await
    };

    for path in ["/v1/apps", "/metrics"] {
        let (code, body) = admin_curl(admin_addr, None, "GET", path).await;
        assert_eq!(code, 401, "{body}");
        let (code, _) = admin_curl(
            admin_addr,
            Some("0123456789abcdef-wrong-token"),
            "GET",
            path,
        )
        .await;
        assert_eq!(code, 401);
    }

    // A request through the proxy, then the listing shows the app, instance and health.
    let out = curl(&pki, gw.addr, &name, &[]).await;
    assert!(out.status.success());
    let (code, body) = authorized("GET", "/v1/apps".into()).await;
    assert_eq!(code, 200);
    let apps: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(apps[0]["app_id"], APP);
    assert_eq!(apps[0]["instances"][0]["instance_id"], I1);
    assert_eq!(apps[0]["instances"][0]["healthy"], true);
    assert_eq!(apps[0]["instances"][0]["drained"], false);

    // Drain: the only instance is drained, so the route is refused; undrain restores it.
    let (code, _) = authorized("POST", format!("/v1/instances/{I1}/drain")).await;
    assert_eq!(code, 200);
    let (code, body) = authorized("POST", "/v1/instances/ffffffffffffffff/drain".into()).await;
    assert_eq!(code, 404, "{body}");
    let before = backend.accepted.load(Ordering::SeqCst);
    let out = curl(&pki, gw.addr, &name, &[]).await;
    assert!(!out.status.success());
    assert_eq!(backend.accepted.load(Ordering::SeqCst), before);
    let (_, body) = authorized("GET", "/v1/instances".into()).await;
    assert!(body.contains("\"drained\":true"), "{body}");
    let (code, _) = authorized("POST", format!("/v1/instances/{I1}/undrain")).await;
    assert_eq!(code, 200);
    assert!(curl(&pki, gw.addr, &name, &[]).await.status.success());

    // Metrics: connections, refusals, histograms, health.
    let (code, text) = authorized("GET", "/metrics".into()).await;
    assert_eq!(code, 200);
    assert!(
        text.contains(&format!(
            "tee_gateway_connections_total{{app=\"{APP}\",mode=\"terminate\"}} 2"
        )),
        "{text}"
    );
    assert!(
        text.contains("tee_gateway_refusals_total{reason=\"no_healthy_instance\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("tee_gateway_tls_handshake_seconds_count 2"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "tee_gateway_instance_healthy{{app=\"{APP}\",instance=\"{I1}\"}} 1"
        )),
        "{text}"
    );

    // Certificates: a broken file keeps the old certificate; a new one is picked up by the admin reload.
    assert_eq!(presented_cn(&pki, gw.addr, &name), "apps.test");
    let good_cert = std::fs::read(&cert_files.cert).unwrap();
    std::fs::write(&cert_files.cert, b"not a certificate").unwrap();
    let (code, body) = authorized("POST", "/v1/certificates/reload".into()).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(presented_cn(&pki, gw.addr, &name), "apps.test");
    std::fs::write(&cert_files.cert, good_cert).unwrap();
    let renewed = pki.issue("renewed", "renewed.apps.test", &["*.apps.test"]);
    std::fs::copy(&renewed.cert, &cert_files.cert).unwrap();
    std::fs::copy(&renewed.key, &cert_files.key).unwrap();
    let (code, body) = authorized("POST", "/v1/certificates/reload".into()).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(presented_cn(&pki, gw.addr, &name), "renewed.apps.test");

    // And without the admin: the file watcher notices a change within its interval.
    let third = pki.issue("third", "third.apps.test", &["*.apps.test"]);
    std::fs::copy(&third.key, &cert_files.key).unwrap();
    std::fs::copy(&third.cert, &cert_files.cert).unwrap();
    wait_until(
        Duration::from_secs(5),
        "the certificate change picked up",
        || {
            let cn = presented_cn(&pki, gw.addr, &name);
            async move { Ok((cn == "third.apps.test").then_some(())) }
        },
    )
    .await
    .unwrap();
    server.abort();
}

/// The DER SubjectPublicKeyInfo of the certificate the proxy presents for `name`, read with openssl.
fn presented_spki(pki: &Pki, gw: std::net::SocketAddr, name: &str) -> Vec<u8> {
    let script = format!(
        "openssl s_client -connect {gw} -servername {name} -CAfile {} </dev/null 2>/dev/null \
         | openssl x509 -pubkey -noout | openssl pkey -pubin -outform DER",
        pki.ca_pem.display()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success() && !out.stdout.is_empty());
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_name_serves_attestation_bound_to_the_tls_key() {
    use attestation::KeyOrigin;
    use attestation::{Evidence, SimSnpAttester, TrustAnchors, Verifier};
    use base64::Engine;
    use gateway::proxy::self_attestation::{report_data_for, AttestationDocument};

    let pki = Pki::new();
    let sim = test_support::pki::sim_snp();
    let attester = Arc::new(SimSnpAttester::new(sim.clone(), [0x11; 48], [0x22; 32]));
    let backend = Backend::start(I1, BackendKind::Http).await;
    let gw = Running::start_with(
        test_config(&pki),
        one_instance(backend.addr, false),
        Some(attester),
    )
    .await;
    let name = format!("gateway.{BASE}");

    let out = curl(&pki, gw.addr, &name, &["--path-as-is"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url_out = {
        let url = format!("https://{name}:{}/v1/attestation", gw.addr.port());
        let resolve = format!("{name}:{}:127.0.0.1", gw.addr.port());
        tokio::process::Command::new("curl")
            .args(["-sS", "--fail", "--cacert"])
            .arg(&pki.ca_pem)
            .args(["--resolve", &resolve, &url])
            .output()
            .await
            .unwrap()
    };
    assert!(
        url_out.status.success(),
        "{}",
        String::from_utf8_lossy(&url_out.stderr)
    );
    let doc: AttestationDocument = serde_json::from_slice(&url_out.stdout).unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&doc.evidence)
        .unwrap();
    let evidence = Evidence::decode(&doc.media_type, &bytes).unwrap();

    // The key of the TLS session, taken independently of the document, is the one the evidence binds.
    let spki = presented_spki(&pki, gw.addr, &name);
    assert_eq!(doc.public_key, hex::encode(&spki));
    // The key comes from the operator's PEM files, and the document and its binding say so.
    assert_eq!(doc.key_origin, KeyOrigin::OperatorSupplied);
    assert!(
        doc.binding
            .contains("tee-gateway/v1/public-tls-key/operator-supplied:"),
        "{}",
        doc.binding
    );
    let bound = report_data_for(KeyOrigin::OperatorSupplied, &spki);
    let verifier = Verifier::new(
        TrustAnchors::production()
            .with_sim_snp_ark(sim.ark_der())
            .unwrap(),
    );
    let claims = verifier
        .verify(&evidence, bound.as_bytes(), std::time::SystemTime::now())
        .unwrap();
    assert_eq!(&claims.report_data, bound.as_bytes());
    // Any other key does not match, and a verifier without the simulated root refuses the evidence.
    let mut other = spki.clone();
    *other.last_mut().unwrap() ^= 1;
    assert!(verifier
        .verify(
            &evidence,
            report_data_for(KeyOrigin::OperatorSupplied, &other).as_bytes(),
            std::time::SystemTime::now()
        )
        .is_err());
    assert!(Verifier::new(TrustAnchors::production())
        .verify(&evidence, bound.as_bytes(), std::time::SystemTime::now())
        .is_err());
    // The served evidence is not an RA-TLS binding of that key: the operator, who holds it, cannot wrap the
    // evidence in an RA-TLS certificate (attestation_cli.rs performs that forgery).
    let as_ra_tls = attestation::ratls::report_data_for_spki(&spki);
    assert_ne!(&claims.report_data, as_ra_tls.as_bytes());
    assert_eq!(
        backend.accepted.load(Ordering::SeqCst),
        0,
        "the reserved name never reaches an app"
    );

    // A proxy without an attester refuses the reserved name.
    let plain = Running::start(test_config(&pki), one_instance(backend.addr, false)).await;
    let out = curl(&pki, plain.addr, &name, &[]).await;
    assert!(!out.status.success());
    assert_eq!(plain.refusals("gateway_endpoint_unavailable"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_start_refuses_an_admin_listener_without_token_and_stops_on_signal() {
    use gateway::proxy::server::Proxy;
    use gateway::proxy::service::{self, StartError};
    let pki = Pki::new();
    let backend = Backend::start(I1, BackendKind::Http).await;
    let mut config = test_config(&pki);
    config.listen = vec!["127.0.0.1:0".parse().unwrap()];
    config.admin.listen = Some("127.0.0.1:0".parse().unwrap());
    let build = |config| {
        Proxy::new(
            config,
            &[BASE.to_string()],
            Duration::from_secs(300),
            one_instance(backend.addr, false),
        )
        .unwrap()
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let err = service::start(build(config.clone()), &shutdown)
        .await
        .unwrap_err();
    assert!(matches!(err, StartError::Admin(_)), "{err}");

    let token_file = pki.dir.path("admin-token");
    std::fs::write(&token_file, "  a-long-enough-admin-token\n").unwrap();
    config.admin.token_file = Some(token_file);
    let running = service::start(build(config), &shutdown).await.unwrap();
    let admin = running.admin_addr.unwrap();
    let gw = running.client_addrs[0];
    let (code, _) = admin_curl(admin, Some("a-long-enough-admin-token"), "GET", "/metrics").await;
    assert_eq!(code, 200);
    let out = curl(
        &pki,
        gw,
        &format!("{APP}-{}.{BASE}", backend.addr.port()),
        &[],
    )
    .await;
    assert!(out.status.success());
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), running.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(gw).await.is_err());
    assert!(tokio::net::TcpStream::connect(admin).await.is_err());
}
