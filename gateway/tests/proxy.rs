//! End-to-end tests of the client-facing proxy with real clients (curl, openssl s_client) and backends on
//! loopback standing in for instances: ClientHello edge cases, bad input and its alerts, resumption, shutdown,
//! the admin API, the gateway's own attestation and health. Routing through real gateway and agent processes
//! (passthrough certificates, gRPC, WebSockets, load spread, failover, drain, limits, PROXY protocol) is tested in
//! the lab, `tests/tests/proxy_lab.rs`.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::proxy::directory::StaticDirectory;
use support::*;
use tokio::io::AsyncWriteExt;

const I1: &str = "1111111111111111";
const I2: &str = "2222222222222222";

fn one_instance(addr: std::net::SocketAddr, port_proxy: bool) -> Arc<StaticDirectory> {
    let d = Arc::new(StaticDirectory::new());
    d.upsert(APP, I1, addr.ip(), [(addr.port(), port_proxy)]);
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_termination_gets_the_backend_answer() {
    let pki = Pki::new();
    let backend = Backend::start(I1, BackendKind::Http).await;
    let gw = Running::start(test_config(&pki), one_instance(backend.addr, false)).await;
    let port = backend.addr.port();
    // By app id and by instance id, name in mixed case.
    for id in [APP, I1, "AAAAAAAA11111111"] {
        let name = format!("{id}-{port}.{BASE}");
        let out = curl(&pki, gw.addr, &name, &["-w", "\n%{http_version}"]).await;
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            body.starts_with(&format!("instance={I1} source=none")),
            "{body}"
        );
        assert!(body.ends_with("\n1.1"), "ALPN should give HTTP/1.1: {body}");
    }
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 3);
    let metrics = gw.proxy.render_metrics();
    assert!(
        metrics.contains(&format!(
            "tee_gateway_connections_total{{app=\"{APP}\",mode=\"terminate\"}} 3"
        )),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_sessions_resume() {
    let pki = Pki::new();
    let backend = Backend::start(I1, BackendKind::Http).await;
    let gw = Running::start(test_config(&pki), one_instance(backend.addr, false)).await;
    let name = format!("{APP}-{}.{BASE}", backend.addr.port());
    let sess = pki.dir.path().join("session.pem");
    let run = |extra: Vec<String>| {
        let mut cmd = std::process::Command::new("openssl");
        cmd.args([
            "s_client",
            "-connect",
            &gw.addr.to_string(),
            "-servername",
            &name,
            "-CAfile",
        ])
        .arg(&pki.ca_pem)
        .args(["-tls1_2", "-verify_return_error"])
        .args(extra)
        .stdin(std::process::Stdio::null());
        cmd.output().unwrap()
    };
    let first = run(vec!["-sess_out".into(), sess.display().to_string()]);
    let text = String::from_utf8_lossy(&first.stdout);
    assert!(text.contains("Verify return code: 0"), "{text}");
    let second = run(vec!["-sess_in".into(), sess.display().to_string()]);
    let text = String::from_utf8_lossy(&second.stdout);
    assert!(text.contains("Reused, TLSv1.2"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_hello_one_byte_per_segment_and_padded_over_records_are_routed() {
    let pki = Pki::new();
    let backend = Backend::start(I1, BackendKind::Record).await;
    let gw = Running::start(test_config(&pki), one_instance(backend.addr, false)).await;
    let name = format!("{APP}-{}s.{BASE}", backend.addr.port());

    // One byte per TCP segment (TCP_NODELAY, a pause between writes).
    let wire = records(&client_hello_message(Some(&name), 0), 16384);
    let mut s = connect(gw.addr).await;
    for b in &wire {
        s.write_all(&[*b]).await.unwrap();
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    // Then 1 MB: past the first 64 KiB the passthrough relay moves it with splice(2).
    let bulk: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    s.write_all(&bulk).await.unwrap();
    s.shutdown().await.unwrap();
    let (answer, _, closed) = read_answer(&mut s, Duration::from_secs(5)).await;
    assert!(closed);
    let expected_len = wire.len() + bulk.len();
    assert_eq!(backend.received.lock().unwrap()[0][wire.len()..], bulk[..]);
    let spliced = gw.proxy.metrics().spliced.load(Ordering::Relaxed);
    assert!(spliced > 800_000, "spliced {spliced}");
    assert_eq!(
        String::from_utf8_lossy(&answer),
        format!("instance={I1} len={expected_len}")
    );

    // 10 KB of padding, split over 1000-byte records and 700-byte writes.
    let wire = records(&client_hello_message(Some(&name), 10 * 1024), 1000);
    assert!(wire.len() > 10 * 1024);
    let mut s = connect(gw.addr).await;
    for part in wire.chunks(700) {
        s.write_all(part).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    s.shutdown().await.unwrap();
    let (answer, _, _) = read_answer(&mut s, Duration::from_secs(5)).await;
    assert_eq!(
        String::from_utf8_lossy(&answer),
        format!("instance={I1} len={}", wire.len())
    );
    let received = backend.received.lock().unwrap().clone();
    assert_eq!(received[1], wire, "the ClientHello is replayed verbatim");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_an_alert_or_close_within_its_deadline_and_is_counted() {
    let pki = Pki::new();
    let backend = Backend::start(I1, BackendKind::Record).await;
    let config = test_config(&pki);
    let hello_deadline = Duration::from_millis(config.client_hello_timeout_ms);
    let gw = Running::start(config, one_instance(backend.addr, false)).await;
    let port = backend.addr.port();
    let cases: Vec<(Option<String>, &str, Option<u8>)> = vec![
        (None, "no_sni", Some(112)),
        (
            Some(format!("bbbbbbbb22222222-{port}.{BASE}")),
            "unknown_id",
            Some(112),
        ),
        (
            Some(format!("{APP}-1.{BASE}")),
            "port_not_exposed",
            Some(112),
        ),
        (
            Some(format!("{APP}-{port}gs.{BASE}")),
            "grpc_passthrough",
            Some(112),
        ),
        (
            Some(format!("{APP}.other.test")),
            "unknown_base_domain",
            Some(112),
        ),
        (
            Some(format!("xyz-{port}.{BASE}")),
            "bad_host_name",
            Some(112),
        ),
    ];
    for (sni, reason, alert_desc) in cases {
        let before = gw.refusals(reason);
        let mut s = connect(gw.addr).await;
        s.write_all(&records(&client_hello_message(sni.as_deref(), 0), 16384))
            .await
            .unwrap();
        let (answer, took, closed) = read_answer(&mut s, Duration::from_secs(3)).await;
        assert!(closed, "{reason}: connection left open");
        assert!(took < Duration::from_secs(1), "{reason}: took {took:?}");
        assert_eq!(answer, alert(alert_desc.unwrap()), "{reason}");
        assert_eq!(gw.refusals(reason), before + 1, "{reason}");
    }

    // A ClientHello over the cap: decode_error, at once.
    let before = gw.refusals("client_hello_too_large");
    let mut s = connect(gw.addr).await;
    let big = records(
        &client_hello_message(Some(&format!("{APP}-{port}s.{BASE}")), 65420),
        4000,
    );
    assert!(big.len() > 65536 + 16 * 5);
    let _ = s.write_all(&big).await;
    let (answer, took, closed) = read_answer(&mut s, Duration::from_secs(3)).await;
    assert!(closed && took < Duration::from_secs(1), "{took:?}");
    assert!(answer.is_empty() || answer == alert(50), "{answer:?}");
    assert_eq!(
        gw.refusals("client_hello_too_large"),
        before + 1,
        "{}",
        gw.proxy.render_metrics()
    );

    // No bytes at all: closed at the ClientHello deadline.
    let before = gw.refusals("client_hello_timeout");
    let mut s = connect(gw.addr).await;
    let (answer, took, closed) = read_answer(&mut s, Duration::from_secs(5)).await;
    assert!(closed && answer.is_empty());
    assert!(
        took >= hello_deadline - Duration::from_millis(50)
            && took < hello_deadline + Duration::from_millis(700),
        "{took:?}"
    );
    assert_eq!(gw.refusals("client_hello_timeout"), before + 1);

    // Not TLS at all.
    let before = gw.refusals("client_hello_malformed");
    let mut s = connect(gw.addr).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (answer, _, closed) = read_answer(&mut s, Duration::from_secs(3)).await;
    assert!(closed);
    assert_eq!(answer, alert(50));
    assert_eq!(gw.refusals("client_hello_malformed"), before + 1);

    // curl sees the refusal as a TLS error naming the alert.
    let out = curl(&pki, gw.addr, &format!("cccccccc33333333.{BASE}"), &[]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("unrecognized name") || err.contains("unrecognized_name"),
        "{err}"
    );
    assert_eq!(
        backend.accepted.load(Ordering::SeqCst),
        0,
        "nothing reached the instance"
    );
}

/// Runs `n` curl requests on new connections (one curl process, parallel transfers); returns each
/// transfer's HTTP status and total time in seconds.
async fn curl_many(pki: &Pki, gw: std::net::SocketAddr, name: &str, n: usize) -> Vec<(u16, f64)> {
    let dir = TempDir::new("curl");
    let cfg = dir.path().join("urls");
    let mut text = String::new();
    for _ in 0..n {
        text.push_str(&format!(
            "url = \"https://{name}:{}/\"\noutput = \"/dev/null\"\n",
            gw.port()
        ));
    }
    std::fs::write(&cfg, text).unwrap();
    let resolve = format!("{name}:{}:{}", gw.port(), gw.ip());
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--parallel",
            "--parallel-max",
            "8",
            "--max-time",
            "20",
            "-H",
            "Connection: close",
            "--cacert",
        ])
        .arg(&pki.ca_pem)
        .args([
            "--resolve",
            &resolve,
            "-w",
            "%{http_code} %{time_total}\n",
            "-K",
        ])
        .arg(&cfg)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let (code, t) = line.split_once(' ').unwrap();
            (code.parse().unwrap(), t.parse().unwrap())
        })
        .collect()
}

/// Refused connections (an instance whose backend is gone) move on to the next candidate within the same client
/// connection: no client request fails. (In the lab, an agent accepts for a stopped fixed-address target until it
/// reports the target down; this is the path of a refused connect.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_instances_cost_no_failed_requests() {
    let pki = Pki::new();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.9:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let live = Backend::start_on(&format!("127.0.0.9:{port}"), I1, BackendKind::Http).await;
    let gone = Backend::start_on(&format!("127.0.0.10:{port}"), I2, BackendKind::Http).await;
    gone.stop();
    let d = Arc::new(StaticDirectory::new());
    d.upsert(APP, I1, "127.0.0.9".parse().unwrap(), [(port, false)]);
    d.upsert(APP, I2, "127.0.0.10".parse().unwrap(), [(port, false)]);
    let gw = Running::start(test_config(&pki), d).await;
    let results = curl_many(&pki, gw.addr, &format!("{APP}-{port}.{BASE}"), 100).await;
    assert_eq!(results.len(), 100);
    assert!(results.iter().all(|(code, _)| *code == 200), "{results:?}");
    assert_eq!(live.accepted.load(Ordering::SeqCst), 100);
    assert_eq!(gone.accepted.load(Ordering::SeqCst), 0);
    assert_eq!(gw.refusals("upstream_unreachable"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_open_connections_finish_then_closes_the_rest() {
    let pki = Pki::new();
    let backend = Backend::start(I1, BackendKind::Record).await;
    let gw = Running::start(test_config(&pki), one_instance(backend.addr, false)).await;
    let addr = gw.addr;
    let name = format!("{APP}-{}s.{BASE}", backend.addr.port());
    let mut open = connect(addr).await;
    open.write_all(&records(&client_hello_message(Some(&name), 0), 16384))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let grace = Duration::from_secs(gw.proxy.config().shutdown_grace_secs);
    let stopping = tokio::spawn(gw.stop());
    tokio::time::sleep(Duration::from_millis(200)).await;
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
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "5",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd
        .arg(format!("http://{admin}{path}"))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
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
    let (code, body) = admin_curl(admin_addr, Some(token), "GET", "/v1/apps").await;
    assert_eq!(code, 200);
    let apps: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(apps[0]["app_id"], APP);
    assert_eq!(apps[0]["instances"][0]["instance_id"], I1);
    assert_eq!(apps[0]["instances"][0]["healthy"], true);
    assert_eq!(apps[0]["instances"][0]["drained"], false);

    // Drain: the only instance is drained, so the route is refused; undrain restores it.
    let (code, _) = admin_curl(
        admin_addr,
        Some(token),
        "POST",
        &format!("/v1/instances/{I1}/drain"),
    )
    .await;
    assert_eq!(code, 200);
    let (code, body) = admin_curl(
        admin_addr,
        Some(token),
        "POST",
        "/v1/instances/ffffffffffffffff/drain",
    )
    .await;
    assert_eq!(code, 404, "{body}");
    let before = backend.accepted.load(Ordering::SeqCst);
    let out = curl(&pki, gw.addr, &name, &[]).await;
    assert!(!out.status.success());
    assert_eq!(backend.accepted.load(Ordering::SeqCst), before);
    let (_, body) = admin_curl(admin_addr, Some(token), "GET", "/v1/instances").await;
    assert!(body.contains("\"drained\":true"), "{body}");
    let (code, _) = admin_curl(
        admin_addr,
        Some(token),
        "POST",
        &format!("/v1/instances/{I1}/undrain"),
    )
    .await;
    assert_eq!(code, 200);
    assert!(curl(&pki, gw.addr, &name, &[]).await.status.success());

    // Metrics: connections, refusals, histograms, health.
    let (code, text) = admin_curl(admin_addr, Some(token), "GET", "/metrics").await;
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
    let (code, body) = admin_curl(admin_addr, Some(token), "POST", "/v1/certificates/reload").await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(presented_cn(&pki, gw.addr, &name), "apps.test");
    std::fs::write(&cert_files.cert, good_cert).unwrap();
    let renewed = pki.issue("renewed", "renewed.apps.test", &["*.apps.test"]);
    std::fs::copy(&renewed.cert, &cert_files.cert).unwrap();
    std::fs::copy(&renewed.key, &cert_files.key).unwrap();
    let (code, body) = admin_curl(admin_addr, Some(token), "POST", "/v1/certificates/reload").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(presented_cn(&pki, gw.addr, &name), "renewed.apps.test");

    // And without the admin: the file watcher notices a change within its interval.
    let third = pki.issue("third", "third.apps.test", &["*.apps.test"]);
    std::fs::copy(&third.key, &cert_files.key).unwrap();
    std::fs::copy(&third.cert, &cert_files.cert).unwrap();
    let t0 = Instant::now();
    while presented_cn(&pki, gw.addr, &name) != "third.apps.test" {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "certificate change not picked up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
    use attestation::{Evidence, SimSnpAttester, SimSnpPki, TrustAnchors, Verifier};
    use base64::Engine;
    use gateway::proxy::self_attestation::{report_data_for, AttestationDocument};

    let pki = Pki::new();
    let sim = Arc::new(SimSnpPki::generate_small("tee-gateway proxy test").unwrap());
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
    let verifier = Verifier::new(
        TrustAnchors::production()
            .with_sim_snp_ark(sim.ark_der())
            .unwrap(),
    );
    let claims = verifier
        .verify(
            &evidence,
            &report_data_for(&spki),
            std::time::SystemTime::now(),
        )
        .unwrap();
    assert_eq!(claims.report_data, report_data_for(&spki));
    // Any other key does not match, and a verifier without the simulated root refuses the evidence.
    let mut other = spki.clone();
    *other.last_mut().unwrap() ^= 1;
    assert!(verifier
        .verify(
            &evidence,
            &report_data_for(&other),
            std::time::SystemTime::now()
        )
        .is_err());
    assert!(Verifier::new(TrustAnchors::production())
        .verify(
            &evidence,
            &report_data_for(&spki),
            std::time::SystemTime::now()
        )
        .is_err());
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

    let token_file = pki.dir.path().join("admin-token");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_without_a_recent_handshake_get_no_connections() {
    let pki = Pki::new();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.7:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let fresh = Backend::start_on(&format!("127.0.0.7:{port}"), I1, BackendKind::Http).await;
    let stale = Backend::start_on(&format!("127.0.0.8:{port}"), I2, BackendKind::Http).await;
    let d = Arc::new(StaticDirectory::new());
    d.upsert(APP, I1, "127.0.0.7".parse().unwrap(), [(port, false)]);
    d.upsert(APP, I2, "127.0.0.8".parse().unwrap(), [(port, false)]);
    d.set_since_handshake(I2, Some(301)); // the window is 300 s
    let gw = Running::start(test_config(&pki), d.clone()).await;
    let name = format!("{APP}-{port}.{BASE}");
    let results = curl_many(&pki, gw.addr, &name, 30).await;
    assert!(results.iter().all(|(code, _)| *code == 200));
    assert_eq!(fresh.accepted.load(Ordering::SeqCst), 30);
    assert_eq!(stale.accepted.load(Ordering::SeqCst), 0);
    // Never handshaked either: no healthy instance, refused with a handshake_failure alert.
    d.set_since_handshake(I1, None);
    let mut s = connect(gw.addr).await;
    s.write_all(&records(&client_hello_message(Some(&name), 0), 16384))
        .await
        .unwrap();
    let (answer, _, closed) = read_answer(&mut s, Duration::from_secs(3)).await;
    assert!(closed);
    assert_eq!(answer, alert(40));
    assert_eq!(gw.refusals("no_healthy_instance"), 1);
}
