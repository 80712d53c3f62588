//! The gateway's data plane end to end in the lab: a real `gateway run` in the gateway host, three real
//! `cvm-agent run` instances of one app in cvm1..cvm3 forwarding to `testserver` backends on their loopback, and
//! real clients (curl, openssl, Python grpcio and websockets) in the client host reaching the gateway over the lab
//! network, every instance reached over the WireGuard tunnel.

mod proxy;
mod registration;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use proxy::client_hello::client_hello_edge_cases;
use proxy::*;
use test_support::binaries::repo_file;
use test_support::clients::{failures, python, tally, HttpsClient};
use test_support::firewall::NftDrop;
use test_support::{testserver, wait_for, Host, Lab, Process};

/// Whether each of `servers` answered within ±15% of an even share of `n` requests.
fn within_even(counts: &BTreeMap<String, usize>, servers: &[&str], n: usize) -> Result<()> {
    let even = n / servers.len();
    for s in servers {
        let c = counts.get(*s).copied().unwrap_or(0);
        if c.abs_diff(even) * 100 > even * 15 {
            bail!("{s} answered {c} of {n}, outside ±15% of {even}: {counts:?}");
        }
    }
    Ok(())
}

/// The PEM's base64 body, without its armour lines.
fn pem_body(pem: &str) -> String {
    pem.lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>()
}

#[test]
#[ignore = "needs root and the lab: network namespaces, TUN devices"]
fn data_plane_through_real_processes_in_the_lab() {
    let lab = Lab::up().unwrap();
    let started = Instant::now();
    let st = Stack::new();
    let _logs = st
        .world
        .logs_on_failure(&["gateway", "cvm1", "cvm2", "cvm3"]);

    let mut servers: Vec<Option<Process>> = CVMS
        .iter()
        .map(|(host, name)| {
            Some(testserver::start(&lab, *host, name, &st.log(&format!("{name}-backend"))).unwrap())
        })
        .collect();
    let mut gw = Some(st.start_gateway(&lab).unwrap());
    let _agents: Vec<Process> = CVMS
        .iter()
        .map(|(host, name)| st.start_agent(&lab, *host, name).unwrap())
        .collect();
    let gateway = SocketAddr::new(Host::Gateway.addr().into(), CLIENT_PORT);
    let client = HttpsClient {
        lab: &lab,
        host: Host::Client,
        gateway,
        ca: st.web.ca_pem.clone(),
        scratch: st.world.dir().to_path_buf(),
    };

    // Every instance answers through the gateway on its own name (instance id route).
    let mut ids = BTreeMap::new();
    for (_, cvm) in CVMS {
        let id = wait_for(
            Duration::from_secs(60),
            &format!("{cvm} registered"),
            || Ok(st.world.instance_id(cvm).ok()),
        )
        .unwrap();
        let name = format!("{id}-8080.{BASE}");
        wait_for(Duration::from_secs(60), &format!("{name} routable"), || {
            Ok(client
                .get_ok(&name, "/")
                .ok()
                .filter(|b| b.contains(&format!("\"server\":\"{cvm}\""))))
        })
        .unwrap();
        ids.insert(cvm, id);
    }
    eprintln!("stack up and routable after {:?}", started.elapsed());
    client_hello_edge_cases(&lab);
    let term = format!("{APP}-8080.{BASE}");
    let ws_url = format!("wss://{gateway}/ws");
    let ca = st.web.ca_pem.display().to_string();

    // WebSockets through termination, quiet for 60 s (three idle timeouts) with pings every 5 s: the session
    // survives. Without pings a quiet spell of 1.5 idle timeouts closes it, so the first check can fail. Both run
    // in the background while the other checks go on, on cvm2's own route (cvm2 is only drained in between, which
    // leaves open connections alone, and is never stopped or blackholed).
    let ws_name = format!("{}-8080.{BASE}", ids["cvm2"]);
    let idle = (3 * IDLE_TIMEOUT_SECS).to_string();
    let short = (IDLE_TIMEOUT_SECS * 3 / 2).to_string();
    // ws_idle.py: a WebSocket session quiet for `idle` seconds, the client pinging every `ping` seconds (0: never).
    let ws_idle = |idle: &str, ping: &str| {
        let args = [ws_url.as_str(), &ws_name, &ca, idle, ping];
        spawn_python(&lab, Host::Client, "tests/tools/ws_idle.py", &args).unwrap()
    };
    let ws_pings = ws_idle(&idle, "5");
    let ws_quiet = ws_idle(&short, "0");

    // curl through termination: the backend's answer, over HTTP/1.1 (ALPN), the backend seeing plain HTTP.
    let (body, version) = client
        .get_written(&term, "/hello", "%{http_version}")
        .unwrap();
    assert_eq!(version, "1.1");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["path"], "/hello");
    assert!(
        doc["server"].as_str().is_some_and(|s| s.starts_with("cvm")),
        "{doc}"
    );
    assert_eq!(doc["tls"], false, "the gateway terminated TLS: {doc}");

    // openssl s_client through `s` (passthrough) sees the backend's own certificate, which verifies against the
    // certificate the same backend serves at /cert.pem (fetched through termination), for its own name.
    let id1 = &ids["cvm1"];
    let backend_cert = client
        .get_ok(&format!("{id1}-8080.{BASE}"), "/cert.pem")
        .unwrap();
    let backend_ca = st.world.scratch.path("cvm1-cert.pem");
    std::fs::write(&backend_ca, &backend_cert).unwrap();
    let (shown, text) = verified_certificate(
        &lab,
        gateway,
        &format!("{id1}-8443s.{BASE}"),
        &backend_ca,
        "cvm1",
    )
    .unwrap();
    assert_eq!(pem_body(&shown), pem_body(&backend_cert), "{text}");
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    // The same name without `s` gets the gateway's certificate instead.
    let (gateway_cert, _) = verified_certificate(
        &lab,
        gateway,
        &format!("{id1}-8443.{BASE}"),
        &st.web.ca_pem,
        &term,
    )
    .unwrap();
    assert_ne!(pem_body(&gateway_cert), pem_body(&backend_cert));

    // grpcio through `g`: unary and server-streaming calls reach an h2c backend.
    let grpc = format!("{APP}-8080g.{BASE}");
    let target = gateway.to_string();
    // grpc_echo.py METHOD ARG over TLS to the gateway, with `authority` as the name.
    let grpc_echo = |method: &str, arg: &str, authority: &str| {
        let args = [
            target.as_str(),
            method,
            arg,
            "--tls",
            "--ca",
            &ca,
            "--authority",
            authority,
        ];
        python(&lab, Host::Client, "scripts/clients/grpc_echo.py", &args)
    };
    let out = grpc_echo("unary", "hello-grpc", &grpc).unwrap();
    let line = out.trim();
    assert!(
        line.starts_with("cvm") && line.ends_with(" hello-grpc"),
        "{out}"
    );
    let out = grpc_echo("stream", "5", &grpc).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    for (i, l) in lines.iter().enumerate() {
        assert!(
            l.starts_with("cvm") && l.ends_with(&format!(" {i}")),
            "{out}"
        );
    }
    // Without `g` the route offers only http/1.1, which a gRPC client refuses.
    assert!(grpc_echo("unary", "x", &term).is_err());

    // WebSocket messages both ways (text and binary echoed).
    let out = python(
        &lab,
        Host::Client,
        "scripts/clients/ws_echo.py",
        &[&ws_url, "one", "two", "--ca", &ca, "--server-name", &term],
    )
    .unwrap();
    assert!(out.trim().starts_with("cvm"), "{out}");

    // 3,000 requests on new connections spread within ±15% of even over the three instances.
    let t0 = Instant::now();
    let (_, counts) = all_served(&lab, &client, &term, 3000, 8);
    eprintln!("3000 requests in {:?}: {counts:?}", t0.elapsed());
    within_even(&counts, &["cvm1", "cvm2", "cvm3"], 3000).unwrap();

    // Drained through the admin API: cvm2 gets no new connections.
    let id2 = ids["cvm2"].clone();
    let (code, body) = admin(&lab, "POST", &format!("/v1/instances/{id2}/drain")).unwrap();
    assert_eq!(code, 200, "{body}");
    let (_, counts) = all_served(&lab, &client, &term, 150, 8);
    assert_eq!(
        counts.get("cvm2"),
        None,
        "a drained instance got connections: {counts:?}"
    );
    assert!(
        counts.contains_key("cvm1") && counts.contains_key("cvm3"),
        "{counts:?}"
    );
    let (code, _) = admin(&lab, "POST", &format!("/v1/instances/{id2}/undrain")).unwrap();
    assert_eq!(code, 200);

    // cvm3 blackholed: every packet from the gateway's tunnel port dropped in cvm3. Requests still succeed, none
    // waits much longer than the stagger for the dead instance (the margin is for a loaded 2-core machine).
    let before = metrics(&lab).unwrap();
    let hole = NftDrop::input(Host::Cvm3, &format!("udp sport {WG_PORT}")).unwrap();
    let n = 60;
    let (results, counts) = all_served(&lab, &client, &term, n, 4);
    assert_eq!(counts.get("cvm3"), None, "{counts:?}");
    let mut times: Vec<f64> = results.iter().map(|t| t.seconds).collect();
    times.sort_by(|a, b| a.total_cmp(b));
    let stagger = STAGGER_MS as f64 / 1000.0;
    let (fastest, slowest) = (times[0], times[n - 1]);
    eprintln!(
        "blackhole: fastest {fastest:.3}s slowest {slowest:.3}s, {} packets dropped",
        hole.dropped_packets().unwrap_or(0)
    );
    assert!(
        slowest - fastest < stagger + 1.0,
        "slowest {slowest:.3}s vs fastest {fastest:.3}s: {times:?}"
    );
    assert!(
        slowest >= stagger,
        "no request met the blackhole first: {times:?}"
    );
    assert!(hole.dropped_packets().unwrap() > 0);
    // The gateway's own view: each of these upstream connects took at most the stagger plus 0.3 s; some waited
    // for the stagger.
    let after = metrics(&lab).unwrap();
    let bucket = |t: &str, le: &str| {
        counter(
            t,
            &format!("tee_gateway_upstream_connect_seconds_bucket{{le=\"{le}\"}}"),
        )
    };
    let count = |t: &str| counter(t, "tee_gateway_upstream_connect_seconds_count");
    assert_eq!(count(&after) - count(&before), n as f64, "{after}");
    assert_eq!(
        bucket(&after, "0.5") - bucket(&before, "0.5"),
        n as f64,
        "{after}"
    );
    assert!(
        bucket(&after, "0.1") - bucket(&before, "0.1") < n as f64,
        "{after}"
    );
    drop(hole);
    let id3 = &ids["cvm3"];
    wait_for(
        Duration::from_secs(30),
        "cvm3 back after the blackhole",
        || Ok(client.get_ok(&format!("{id3}-8080.{BASE}"), "/").ok()),
    )
    .unwrap();

    // PROXY protocol v2 on port 8081 carries the client's real address (the client host's, 198.18.0.100).
    let (body, local) = client
        .get_written(
            &format!("{APP}-{PROXIED_PORT}.{BASE}"),
            "/",
            "%{local_ip}:%{local_port}",
        )
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["proxy"]["version"], 2, "{doc}");
    assert_eq!(doc["proxy"]["source"], local, "{doc}");
    assert!(
        local.starts_with(&format!("{}:", Host::Client.addr())),
        "{local}"
    );
    // Without the policy the backend sees no header, only the agent's forwarder as its peer.
    let doc: serde_json::Value = serde_json::from_str(&client.get_ok(&term, "/").unwrap()).unwrap();
    assert!(doc["proxy"].is_null(), "{doc}");

    // The per-app connection limit: connections held open up to the limit (with the WebSocket sessions), the
    // next one refused and counted. The slot is taken after the TLS handshake, so on this terminated route the
    // refused client gets a 503 inside its session.
    let refusals = |t: &str| {
        counter(
            t,
            "tee_gateway_refusals_total{reason=\"app_connection_limit\"}",
        )
    };
    let before = refusals(&metrics(&lab).unwrap());
    let mut holder = {
        let mut cmd = lab.command(Host::Client, "python3");
        cmd.arg(repo_file("tests/tools/hold_tls.py"))
            .args([
                gateway.ip().to_string(),
                CLIENT_PORT.to_string(),
                term.clone(),
                ca.clone(),
                "64".to_owned(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        lab.spawn(cmd).unwrap()
    };
    let stdout = holder.child_mut().stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let report: serde_json::Value =
        serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let held = report["held"].as_u64().unwrap() as usize;
    let error = report["error"].as_str().unwrap_or_default().to_lowercase();
    assert!(error.contains("http/1.1 503"), "{report}");
    let (code, body) = admin(&lab, "GET", "/v1/apps").unwrap();
    assert_eq!(code, 200);
    let apps: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(apps[0]["connections"], MAX_PER_APP, "{apps}");
    assert!(
        held + 4 >= MAX_PER_APP && held <= MAX_PER_APP,
        "held {held}: {apps}"
    );
    assert_eq!(refusals(&metrics(&lab).unwrap()), before + 1.0);
    holder
        .child_mut()
        .stdin
        .take()
        .unwrap()
        .write_all(b"done\n")
        .unwrap();
    holder.wait_output(Duration::from_secs(10)).unwrap();
    // Releasing the held connections (closed without TLS close_notify) frees their slots at once, not at the
    // idle timeout: only the WebSocket sessions stay open.
    let released = Instant::now();
    wait_for(Duration::from_secs(5), "slots freed", || {
        let (_, body) = admin(&lab, "GET", "/v1/apps")?;
        let apps: serde_json::Value = serde_json::from_str(&body)?;
        Ok((apps[0]["connections"].as_u64().unwrap_or(u64::MAX) <= 2).then_some(()))
    })
    .unwrap();
    eprintln!("held connections released in {:?}", released.elapsed());
    client.get_ok(&term, "/").unwrap();

    // One instance's backend stopped: its agent's probe notices within the probe interval (2 s), stops listening
    // on the port (connection attempts to it are refused at the SYN) and reports the port down at once; then no
    // client request fails and none goes to cvm1.
    let addr1 = SocketAddr::new(
        st.tunnel_address(id1)
            .context("cvm1's tunnel address")
            .unwrap()
            .into(),
        testserver::HTTP,
    );
    assert!(
        !refused_from_gateway(&lab, addr1).unwrap(),
        "{addr1} refused while cvm1's backend runs"
    );
    // The agent's registrations made to report a port state change at once.
    let early_reports = || {
        std::fs::read_to_string(st.log("cvm1"))
            .unwrap_or_default()
            .matches("a port's target state changed; registering again to report it")
            .count()
    };
    let reports_before = early_reports();
    servers[0]
        .take()
        .unwrap()
        .terminate(Duration::from_secs(5))
        .unwrap();
    let stopped = Instant::now();
    wait_for(
        Duration::from_secs(15),
        "cvm1's agent no longer listening on the port",
        || Ok(refused_from_gateway(&lab, addr1)?.then_some(())),
    )
    .unwrap();
    eprintln!(
        "cvm1's port refused {:?} after its backend stopped (registry: {:?})",
        stopped.elapsed(),
        st.target_state(id1, testserver::HTTP)
    );
    // The agent reports the change at once, in a registration of its own (not the periodic one). The requests
    // wait for that report too: requests racing it have been seen to fail ("empty reply"), a case still to be
    // explained (the proxy's and forwarder's debug logs are kept when the test fails).
    wait_for(
        Duration::from_secs(10),
        "cvm1's target reported down",
        || {
            Ok((st.target_state(id1, testserver::HTTP)
                == Some(protocol::control::TargetState::Down))
            .then_some(()))
        },
    )
    .unwrap();
    let (_, counts) = all_served(&lab, &client, &term, 300, 8);
    assert_eq!(counts.get("cvm1"), None, "{counts:?}");
    let reports = early_reports();
    assert!(
        reports > reports_before,
        "no early registration logged by cvm1's agent"
    );

    // The backend restarted: the next probe finds it, the agent listens again and reports the port up at once,
    // and cvm1 receives requests again; meanwhile no request fails.
    servers[0] =
        Some(testserver::start(&lab, Host::Cvm1, "cvm1", &st.log("cvm1-backend")).unwrap());
    let restarted = Instant::now();
    let mut failed = Vec::new();
    let counts = wait_for(
        Duration::from_secs(30),
        "cvm1 serving the app again",
        || {
            let results = client.many(&term, "/", 30, 4)?;
            failed.extend(failures(&results));
            let counts = tally(&results);
            Ok(counts.contains_key("cvm1").then_some(counts))
        },
    )
    .unwrap();
    eprintln!(
        "cvm1 served again {:?} after its backend restarted: {counts:?}",
        restarted.elapsed()
    );
    assert!(failed.is_empty(), "requests failed: {failed:?}");
    wait_for(Duration::from_secs(10), "cvm1's target reported up", || {
        Ok(
            (st.target_state(id1, testserver::HTTP) == Some(protocol::control::TargetState::Up))
                .then_some(()),
        )
    })
    .unwrap();
    assert!(
        early_reports() > reports,
        "the restart was not reported early"
    );

    // The WebSocket sessions: with pings open after 60 s quiet, without pings closed by the idle timeout.
    let out = ws_pings.wait_output(Duration::from_secs(120)).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.trim() == "ok cvm2",
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ws_quiet.wait_output(Duration::from_secs(60)).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.trim().starts_with("closed"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A drain is stored: after the gateway restarts (killed, not stopped), cvm2 is still drained and gets nothing.
    let (code, _) = admin(&lab, "POST", &format!("/v1/instances/{id2}/drain")).unwrap();
    assert_eq!(code, 200);
    let mut old = gw.take().unwrap();
    old.child_mut().kill().unwrap();
    let _ = old.child_mut().wait();
    let _gw = st.start_gateway(&lab).unwrap();
    wait_for(
        Duration::from_secs(30),
        "the restarted gateway's admin API",
        || Ok(drained(&lab, &id2).ok().flatten()),
    )
    .unwrap();
    assert_eq!(drained(&lab, &id2).unwrap(), Some(true));
    assert_eq!(drained(&lab, id3).unwrap(), Some(false));
    wait_for(
        Duration::from_secs(60),
        "the app routable after the restart",
        || Ok(client.get_ok(&term, "/").ok()),
    )
    .unwrap();
    let results = client.many(&term, "/", 30, 4).unwrap();
    let counts = tally(&results);
    assert_eq!(counts.get(""), None, "{counts:?} {:?}", failures(&results));
    assert_eq!(counts.get("cvm2"), None, "{counts:?}");
    eprintln!("proxy lab test done in {:?}", started.elapsed());
}
