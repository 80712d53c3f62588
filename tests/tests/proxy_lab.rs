//! The gateway's data plane end to end in the lab: a real `gateway run` in the gateway host, three real
//! `cvm-agent run` instances of one app in cvm1..cvm3 forwarding to `testserver` backends on their loopback, and
//! real clients (curl, openssl, Python grpcio and websockets) in the client host reaching the gateway over the lab
//! network, every instance reached over the WireGuard tunnel.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use attestation::SimSnpPki;
use tee_gateway_tests::stack::{
    self, failures, metric, repo_file, tally, workspace_binary, HttpsClient, NftDrop, WebPki,
};
use tee_gateway_tests::{wait_for, Host, Lab, Process};

const APP: &str = "feedface222222222222222222222222";
const BASE: &str = "apps.lab.test";
const MEASUREMENT: &str = "aa";
const CONTROL_PORT: u16 = 8443;
const WG_PORT: u16 = 51820;
const CLIENT_PORT: u16 = 443;
const ADMIN: &str = "127.0.0.1:9444";
const ADMIN_TOKEN: &str = "lab-admin-token-0123456789";
/// The gateway's idle timeout; the WebSocket check stays quiet for 60 s, three times as long.
const IDLE_TIMEOUT_SECS: u64 = 20;
const STAGGER_MS: u64 = 200;
const MAX_PER_APP: usize = 16;
/// The agents' port with a PROXY protocol v2 header (to the same testserver port as 8080).
const PROXIED_PORT: u16 = 8081;
/// The gateway's ClientHello deadline.
const CLIENT_HELLO_TIMEOUT_MS: u64 = 3000;

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("tg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed: logs and files kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn measurement(byte: &str) -> String {
    byte.repeat(48)
}

/// Everything one run of the stack needs on disk: simulated attestation PKI and policies, the web PKI, the
/// configuration files of the gateway and the agents.
struct Stack {
    scratch: Scratch,
    web: WebPki,
}

const CVMS: [(Host, &str); 3] = [
    (Host::Cvm1, "cvm1"),
    (Host::Cvm2, "cvm2"),
    (Host::Cvm3, "cvm3"),
];

impl Stack {
    fn new() -> Result<Stack> {
        let scratch = Scratch::new("proxy-lab");
        let pki = scratch.path("sim-pki");
        SimSnpPki::generate_small("tee-gateway proxy lab")?.write_pem(&pki)?;
        std::fs::write(
            scratch.path("apps.toml"),
            format!(
                "[[apps.{APP}.profile]]\nplatform = \"sim-snp\"\nmeasurement = \"{}\"\n",
                measurement(MEASUREMENT)
            ),
        )?;
        std::fs::write(
            scratch.path("gateway-policy.toml"),
            format!(
                "[[profile]]\nplatform = \"sim-snp\"\nmeasurement = \"{}\"\n",
                measurement(MEASUREMENT)
            ),
        )?;
        std::fs::write(scratch.path("admin-token"), format!("{ADMIN_TOKEN}\n"))?;
        let web = WebPki::new(&scratch.path("web"))?;
        let cert = web.issue("wildcard", "lab gateway", &[&format!("*.{BASE}")])?;
        let gw = Host::Gateway.addr();
        let gateway = format!(
            r#"base_domains = ["{BASE}"]
[control]
listen = "{gw}:{CONTROL_PORT}"
rate_limit_per_sec = 1000
rate_limit_burst = 1000
[tunnel]
listen_port = {WG_PORT}
public_endpoint = "{gw}:{WG_PORT}"
interface = "tgpx0"
reregister_secs = 10
keepalive_secs = 2
[registry]
path = "{db}"
[attestation]
backend = "sim-snp"
app_policy = "{policy}"
trusted_sim_roots = ["{pki}"]
sim_pki = "{pki}"
sim_measurement = "{m}"
[proxy]
listen = ["{gw}:{CLIENT_PORT}"]
certificates = [{{ cert = "{cert}", key = "{key}" }}]
idle_timeout_secs = {IDLE_TIMEOUT_SECS}
client_hello_timeout_ms = {CLIENT_HELLO_TIMEOUT_MS}
connect_stagger_ms = {STAGGER_MS}
max_connections_per_app = {MAX_PER_APP}
[proxy.admin]
listen = "{ADMIN}"
token_file = "{token}"
"#,
            db = scratch.path("registry.sqlite").display(),
            policy = scratch.path("apps.toml").display(),
            pki = pki.display(),
            m = measurement(MEASUREMENT),
            cert = cert.cert.display(),
            key = cert.key.display(),
            token = scratch.path("admin-token").display(),
        );
        std::fs::write(scratch.path("gateway.toml"), gateway)?;
        for (_, name) in CVMS {
            let agent = format!(
                r#"app_id = "{APP}"
gateways = ["https://{gw}:{CONTROL_PORT}"]
state_dir = "{state}"
[attestation]
backend = "sim-snp"
gateway_policy = "{gp}"
trusted_sim_roots = ["{pki}"]
sim_pki = "{pki}"
sim_measurement = "{m}"
[tunnel]
interface = "tgpx-{name}"
[registration]
retry_initial_ms = 200
retry_max_ms = 2000
attempt_timeout_secs = 5
[[ports]]
port = {http}
target = "127.0.0.1:{http}"
[[ports]]
port = {PROXIED_PORT}
target = "127.0.0.1:{http}"
proxy_protocol = true
[[ports]]
port = {tls}
target = "127.0.0.1:{tls}"
[[ports]]
port = {echo}
target = "127.0.0.1:{echo}"
"#,
                state = scratch.path(&format!("state-{name}")).display(),
                gp = scratch.path("gateway-policy.toml").display(),
                pki = pki.display(),
                m = measurement(MEASUREMENT),
                http = stack::TESTSERVER_HTTP,
                tls = stack::TESTSERVER_TLS,
                echo = stack::TESTSERVER_ECHO,
            );
            std::fs::write(scratch.path(&format!("agent-{name}.toml")), agent)?;
        }
        Ok(Stack { scratch, web })
    }

    fn log(&self, name: &str) -> PathBuf {
        self.scratch.path(&format!("{name}.log"))
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["gateway", "cvm1", "cvm2", "cvm3"] {
            let text = std::fs::read_to_string(self.log(name)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out += &format!("--- {name}.log (last lines)\n");
            for l in tail.into_iter().rev() {
                out += l;
                out.push('\n');
            }
        }
        out
    }

    /// Starts `program run --config <name>.toml` in `host`, logging to `<log>.log`.
    fn start(
        &self,
        lab: &Lab,
        host: Host,
        program: &str,
        config: &str,
        log: &str,
    ) -> Result<Process> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(log))?;
        let mut cmd = lab.command(host, workspace_binary(program)?);
        cmd.args(["run", "--config"])
            .arg(self.scratch.path(config))
            .env(
                "RUST_LOG",
                "info,gateway::proxy=debug,cvm_agent::forward=debug",
            )
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        lab.spawn(cmd)
    }

    fn start_gateway(&self, lab: &Lab) -> Result<Process> {
        self.start(lab, Host::Gateway, "gateway", "gateway.toml", "gateway")
    }

    fn instance_id(&self, cvm: &str) -> Result<String> {
        let path = self.scratch.path(&format!("state-{cvm}/instance-id"));
        Ok(std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim()
            .to_owned())
    }

    /// The target state the registry holds for `port` of instance `id`.
    fn target_state(&self, id: &str, port: u16) -> Option<protocol::control::TargetState> {
        use gateway::registry::RegistryStore;
        let mut store =
            gateway::registry::SqliteStore::open(&self.scratch.path("registry.sqlite")).ok()?;
        store
            .load_all()
            .ok()?
            .into_iter()
            .find(|r| r.instance_id.as_str() == id)?
            .ports
            .into_iter()
            .find(|p| p.port == port)?
            .target_state
    }
}

impl Stack {
    /// The tunnel address the registry holds for instance `id`.
    fn tunnel_address(&self, id: &str) -> Option<std::net::Ipv4Addr> {
        use gateway::registry::RegistryStore;
        let mut store =
            gateway::registry::SqliteStore::open(&self.scratch.path("registry.sqlite")).ok()?;
        store
            .load_all()
            .ok()?
            .into_iter()
            .find(|r| r.instance_id.as_str() == id)
            .map(|r| r.tunnel_address)
    }
}

/// Whether a TCP connection from the gateway host straight to `addr` (an instance's tunnel address and port,
/// through the tunnel) is refused: curl's exit status 7, "could not connect" (a timeout is 28).
fn refused_from_gateway(lab: &Lab, addr: SocketAddr) -> Result<bool> {
    let status = lab
        .command(Host::Gateway, "curl")
        .args(["-s", "-o", "/dev/null", "--connect-timeout", "3"])
        .args(["--max-time", "5", &format!("http://{addr}/")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    match status.code() {
        Some(7) => Ok(true),
        Some(0) => Ok(false),
        code => bail!("curl http://{addr}/ from the gateway host: exit status {code:?}"),
    }
}

/// One admin API request from inside the gateway host; returns status and body.
fn admin(lab: &Lab, method: &str, path: &str) -> Result<(u16, String)> {
    let out = lab
        .command(Host::Gateway, "curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ])
        .args(["-H", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
        .arg(format!("http://{ADMIN}{path}"))
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').with_context(|| {
        format!(
            "admin {method} {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((code.trim().parse().unwrap_or(0), body.to_owned()))
}

fn metrics(lab: &Lab) -> Result<String> {
    let (code, body) = admin(lab, "GET", "/metrics")?;
    if code != 200 {
        bail!("GET /metrics answered {code}: {body}");
    }
    Ok(body)
}

/// The refusal counters and open connections, for failure messages.
fn refusal_summary(lab: &Lab) -> String {
    match metrics(lab) {
        Ok(text) => text
            .lines()
            .filter(|l| {
                l.starts_with("tee_gateway_refusals_total")
                    || l.starts_with("tee_gateway_active_connections")
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("no metrics: {e:#}"),
    }
}

fn counter(text: &str, series: &str) -> f64 {
    metric(text, series).unwrap_or(0.0)
}

/// The instance's `drained` flag as the admin API lists it.
fn drained(lab: &Lab, id: &str) -> Result<Option<bool>> {
    let (code, body) = admin(lab, "GET", "/v1/instances")?;
    if code != 200 {
        bail!("GET /v1/instances answered {code}: {body}");
    }
    let list: serde_json::Value = serde_json::from_str(&body)?;
    Ok(list
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["instance_id"] == id)
        .and_then(|i| i["drained"].as_bool()))
}

/// Runs a Python script from the repository in `host`; returns its stdout, failing with its stderr.
fn python(lab: &Lab, host: Host, script: &str, args: &[&str]) -> Result<String> {
    let out = lab
        .command(host, "python3")
        .arg(repo_file(script))
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!(
            "{script} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn spawn_python(lab: &Lab, host: Host, script: &str, args: &[&str]) -> Result<Process> {
    let mut cmd = lab.command(host, "python3");
    cmd.arg(repo_file(script))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    lab.spawn(cmd)
}

/// One case of `tests/tools/hello_cases.py`.
#[derive(Debug)]
struct HelloCase {
    sent_hex: String,
    answer: Vec<u8>,
    elapsed: Duration,
    closed: bool,
}

/// A TLS alert record as the gateway sends it.
fn alert(description: u8) -> Vec<u8> {
    vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description]
}

/// ClientHellos from a real TLS library (OpenSSL through Python), sent from the client host: one byte per TCP
/// segment, and split over records with 10 KB of unknown extension, are routed through a passthrough route to an
/// instance's raw echo port (the ClientHello comes back byte for byte); every bad input gets its alert or close
/// within its deadline, and its refusal counter rises by one.
fn client_hello_edge_cases(lab: &Lab, st: &Stack) {
    let bad: Vec<(String, &str, Option<u8>)> = vec![
        (String::new(), "no_sni", Some(112)),
        (
            format!("bbbbbbbb22222222-8080.{BASE}"),
            "unknown_id",
            Some(112),
        ),
        (format!("{APP}-1.{BASE}"), "port_not_exposed", Some(112)),
        (
            format!("{APP}-8080gs.{BASE}"),
            "grpc_passthrough",
            Some(112),
        ),
        (
            format!("{APP}.other.test"),
            "unknown_base_domain",
            Some(112),
        ),
        (format!("xyz-8080.{BASE}"), "bad_host_name", Some(112)),
    ];
    let before = metrics(lab).unwrap_or_else(|e| fail(st, e));
    let names: Vec<&str> = bad.iter().map(|(n, _, _)| n.as_str()).collect();
    let names = serde_json::to_string(&names).unwrap();
    let echo_name = format!("{APP}-{}s.{BASE}", stack::TESTSERVER_ECHO);
    let out = python(
        lab,
        Host::Client,
        "tests/tools/hello_cases.py",
        &[
            &Host::Gateway.addr().to_string(),
            &CLIENT_PORT.to_string(),
            &echo_name,
            &names,
        ],
    )
    .unwrap_or_else(|e| fail(st, e));
    let after = metrics(lab).unwrap_or_else(|e| fail(st, e));
    let mut cases = BTreeMap::new();
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        cases.insert(
            text("case"),
            HelloCase {
                sent_hex: text("sent_hex"),
                answer: hex::decode(text("answer")).unwrap(),
                elapsed: Duration::from_secs_f64(v["elapsed"].as_f64().unwrap_or(f64::MAX)),
                closed: v["closed"].as_bool().unwrap_or(false),
            },
        );
    }
    let case = |name: &str| {
        cases
            .get(name)
            .unwrap_or_else(|| panic!("no result for {name}: {out}"))
    };
    let refusals = |text: &str, reason: &str| {
        counter(
            text,
            &format!("tee_gateway_refusals_total{{reason=\"{reason}\"}}"),
        )
    };
    for name in ["one_byte", "padded"] {
        let c = case(name);
        assert!(
            !c.sent_hex.is_empty() && hex::encode(&c.answer) == c.sent_hex,
            "{name}: the ClientHello did not come back from the instance's echo port: {c:?}"
        );
    }
    let quick = Duration::from_secs(2);
    for (name, reason, answers) in [
        (
            "too_large",
            "client_hello_too_large",
            vec![vec![], alert(50)],
        ),
        ("not_tls", "client_hello_malformed", vec![alert(50)]),
    ] {
        let c = case(name);
        assert!(c.closed && c.elapsed < quick, "{name}: {c:?}");
        assert!(answers.contains(&c.answer), "{name}: {c:?}");
        assert_eq!(
            refusals(&after, reason),
            refusals(&before, reason) + 1.0,
            "{reason}"
        );
    }
    let c = case("silent");
    let deadline = Duration::from_millis(CLIENT_HELLO_TIMEOUT_MS);
    assert!(
        c.closed
            && c.answer.is_empty()
            && c.elapsed >= deadline - Duration::from_millis(100)
            && c.elapsed < deadline + quick,
        "silent: {c:?}"
    );
    assert_eq!(
        refusals(&after, "client_hello_timeout"),
        refusals(&before, "client_hello_timeout") + 1.0
    );
    for (name, reason, description) in &bad {
        let c = case(&format!("bad:{name}"));
        assert!(c.closed && c.elapsed < quick, "{reason}: {c:?}");
        if let Some(d) = description {
            assert_eq!(c.answer, alert(*d), "{reason}");
        }
        assert_eq!(
            refusals(&after, reason),
            refusals(&before, reason) + 1.0,
            "{reason}"
        );
    }
    eprintln!(
        "ClientHello cases: one byte per segment and padded routed; {} bad inputs refused",
        bad.len() + 3
    );
}

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

/// The certificate (PEM) that `openssl s_client` is shown for `name` through the gateway, verified against
/// `ca_file` with host name `verify_name`.
fn presented_certificate(
    lab: &Lab,
    gateway: SocketAddr,
    name: &str,
    ca_file: &Path,
    verify_name: &str,
) -> Result<(String, String)> {
    let out = lab
        .command(Host::Client, "openssl")
        .args([
            "s_client",
            "-connect",
            &gateway.to_string(),
            "-servername",
            name,
        ])
        .args([
            "-verify_hostname",
            verify_name,
            "-verify_return_error",
            "-CAfile",
        ])
        .arg(ca_file)
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let begin = text.find("-----BEGIN CERTIFICATE-----").with_context(|| {
        format!(
            "no certificate in: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let end_marker = "-----END CERTIFICATE-----";
    let end =
        text[begin..].find(end_marker).context("unterminated PEM")? + begin + end_marker.len();
    Ok((text[begin..end].to_owned(), text))
}

/// Fails the test with `e` and the ends of the processes' logs.
fn fail(st: &Stack, e: anyhow::Error) -> ! {
    panic!("{e:#}\n{}", st.logs())
}

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
    let st = Stack::new().unwrap();

    let mut servers: Vec<Option<Process>> = CVMS
        .iter()
        .map(|(host, name)| {
            Some(
                stack::start_testserver(&lab, *host, name, &st.log(&format!("{name}-backend")))
                    .unwrap(),
            )
        })
        .collect();
    let mut gw = Some(st.start_gateway(&lab).unwrap());
    let _agents: Vec<Process> = CVMS
        .iter()
        .map(|(host, name)| {
            st.start(
                &lab,
                *host,
                "cvm-agent",
                &format!("agent-{name}.toml"),
                name,
            )
            .unwrap()
        })
        .collect();
    let gateway = SocketAddr::new(Host::Gateway.addr().into(), CLIENT_PORT);
    let client = HttpsClient {
        lab: &lab,
        host: Host::Client,
        gateway,
        ca: st.web.ca_pem.clone(),
        scratch: st.scratch.0.clone(),
    };

    // Every instance answers through the gateway on its own name (instance id route).
    let mut ids = BTreeMap::new();
    for (_, cvm) in CVMS {
        let id = wait_for(
            Duration::from_secs(60),
            &format!("{cvm} registered"),
            || Ok(st.instance_id(cvm).ok()),
        )
        .unwrap_or_else(|e| fail(&st, e));
        let name = format!("{id}-8080.{BASE}");
        wait_for(Duration::from_secs(60), &format!("{name} routable"), || {
            Ok(client
                .get_ok(&name, "/")
                .ok()
                .filter(|b| b.contains(&format!("\"server\":\"{cvm}\""))))
        })
        .unwrap_or_else(|e| fail(&st, e));
        ids.insert(cvm, id);
    }
    eprintln!("stack up and routable after {:?}", started.elapsed());
    client_hello_edge_cases(&lab, &st);
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
    let ws_pings = spawn_python(
        &lab,
        Host::Client,
        "tests/tools/ws_idle.py",
        &[&ws_url, &ws_name, &ca, &idle, "5"],
    )
    .unwrap();
    let ws_quiet = spawn_python(
        &lab,
        Host::Client,
        "tests/tools/ws_idle.py",
        &[&ws_url, &ws_name, &ca, &short, "0"],
    )
    .unwrap();

    // curl through termination: the backend's answer, over HTTP/1.1 (ALPN), the backend seeing plain HTTP.
    let out = client
        .get(&term, "/hello", &["--fail", "-w", "\n%{http_version}"])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, version) = text.rsplit_once('\n').unwrap();
    assert_eq!(version, "1.1");
    let doc: serde_json::Value = serde_json::from_str(body).unwrap();
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
    let backend_ca = st.scratch.path("cvm1-cert.pem");
    std::fs::write(&backend_ca, &backend_cert).unwrap();
    let (shown, text) = presented_certificate(
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
    let (gateway_cert, _) = presented_certificate(
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
    let grpc_args = |method: &'static str, arg: &'static str| {
        vec![
            target.clone(),
            method.to_owned(),
            arg.to_owned(),
            "--tls".into(),
            "--ca".into(),
            ca.clone(),
            "--authority".into(),
            grpc.clone(),
        ]
    };
    let args = grpc_args("unary", "hello-grpc");
    let out = python(
        &lab,
        Host::Client,
        "scripts/clients/grpc_echo.py",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .unwrap();
    let line = out.trim();
    assert!(
        line.starts_with("cvm") && line.ends_with(" hello-grpc"),
        "{out}"
    );
    let args = grpc_args("stream", "5");
    let out = python(
        &lab,
        Host::Client,
        "scripts/clients/grpc_echo.py",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    for (i, l) in lines.iter().enumerate() {
        assert!(
            l.starts_with("cvm") && l.ends_with(&format!(" {i}")),
            "{out}"
        );
    }
    // Without `g` the route offers only http/1.1, which a gRPC client refuses.
    let mut plain = grpc_args("unary", "x");
    *plain.last_mut().unwrap() = term.clone();
    assert!(python(
        &lab,
        Host::Client,
        "scripts/clients/grpc_echo.py",
        &plain.iter().map(String::as_str).collect::<Vec<_>>()
    )
    .is_err());

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
    let results = client.many(&term, "/", 3000, 8).unwrap();
    let counts = tally(&results);
    eprintln!("3000 requests in {:?}: {counts:?}", t0.elapsed());
    assert_eq!(
        counts.get(""),
        None,
        "{counts:?} {:?}\n{}",
        failures(&results),
        refusal_summary(&lab)
    );
    within_even(&counts, &["cvm1", "cvm2", "cvm3"], 3000).unwrap();

    // Drained through the admin API: cvm2 gets no new connections.
    let id2 = ids["cvm2"].clone();
    let (code, body) = admin(&lab, "POST", &format!("/v1/instances/{id2}/drain")).unwrap();
    assert_eq!(code, 200, "{body}");
    let results = client.many(&term, "/", 150, 8).unwrap();
    let counts = tally(&results);
    assert_eq!(
        counts.get(""),
        None,
        "{counts:?} {:?}\n{}",
        failures(&results),
        refusal_summary(&lab)
    );
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
    let results = client.many(&term, "/", n, 4).unwrap();
    let counts = tally(&results);
    assert_eq!(
        counts.get(""),
        None,
        "{counts:?} {:?}\n{}",
        failures(&results),
        refusal_summary(&lab)
    );
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
    .unwrap_or_else(|e| fail(&st, e));

    // PROXY protocol v2 on port 8081 carries the client's real address (the client host's, 198.18.0.100).
    let out = client
        .get(
            &format!("{APP}-{PROXIED_PORT}.{BASE}"),
            "/",
            &["--fail", "-w", "\n%{local_ip}:%{local_port}"],
        )
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, local) = text.rsplit_once('\n').unwrap();
    let doc: serde_json::Value = serde_json::from_str(body).unwrap();
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
    // next one refused with a handshake_failure alert and counted.
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
    assert!(error.contains("handshake failure"), "{report}");
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
    .unwrap_or_else(|e| fail(&st, e));
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
        stack::TESTSERVER_HTTP,
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
    .unwrap_or_else(|e| fail(&st, e));
    eprintln!(
        "cvm1's port refused {:?} after its backend stopped (registry: {:?})",
        stopped.elapsed(),
        st.target_state(id1, stack::TESTSERVER_HTTP)
    );
    // The agent reports the change at once, in a registration of its own (not the periodic one). The requests
    // wait for that report too: requests racing it have been seen to fail ("empty reply"), a case still to be
    // explained (the proxy's and forwarder's debug logs are kept when the test fails).
    wait_for(
        Duration::from_secs(10),
        "cvm1's target reported down",
        || {
            Ok((st.target_state(id1, stack::TESTSERVER_HTTP)
                == Some(protocol::control::TargetState::Down))
            .then_some(()))
        },
    )
    .unwrap_or_else(|e| fail(&st, e));
    let results = client.many(&term, "/", 300, 8).unwrap();
    let counts = tally(&results);
    assert_eq!(
        counts.get(""),
        None,
        "{counts:?} {:?}\n{}",
        failures(&results),
        refusal_summary(&lab)
    );
    assert_eq!(counts.get("cvm1"), None, "{counts:?}");
    let reports = early_reports();
    assert!(
        reports > reports_before,
        "no early registration logged by cvm1's agent"
    );

    // The backend restarted: the next probe finds it, the agent listens again and reports the port up at once,
    // and cvm1 receives requests again; meanwhile no request fails.
    servers[0] =
        Some(stack::start_testserver(&lab, Host::Cvm1, "cvm1", &st.log("cvm1-backend")).unwrap());
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
    .unwrap_or_else(|e| fail(&st, e));
    eprintln!(
        "cvm1 served again {:?} after its backend restarted: {counts:?}",
        restarted.elapsed()
    );
    assert!(failed.is_empty(), "requests failed: {failed:?}");
    wait_for(Duration::from_secs(10), "cvm1's target reported up", || {
        Ok((st.target_state(id1, stack::TESTSERVER_HTTP)
            == Some(protocol::control::TargetState::Up))
        .then_some(()))
    })
    .unwrap_or_else(|e| fail(&st, e));
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
    .unwrap_or_else(|e| fail(&st, e));
    assert_eq!(drained(&lab, &id2).unwrap(), Some(true));
    assert_eq!(drained(&lab, id3).unwrap(), Some(false));
    wait_for(
        Duration::from_secs(60),
        "the app routable after the restart",
        || Ok(client.get_ok(&term, "/").ok()),
    )
    .unwrap_or_else(|e| fail(&st, e));
    let results = client.many(&term, "/", 30, 4).unwrap();
    let counts = tally(&results);
    assert_eq!(counts.get(""), None, "{counts:?} {:?}", failures(&results));
    assert_eq!(counts.get("cvm2"), None, "{counts:?}");
    eprintln!("proxy lab test done in {:?}", started.elapsed());
}
