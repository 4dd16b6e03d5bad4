//! `make loadtest`: meshop's injection webhook measured the way it is deployed.
//!
//! By default it starts a local control plane and the real `meshop run` process (release build
//! next to this binary, or `MESHOP_BIN`), creates a MeshInstall and an injection-labelled
//! namespace, and drives the webhook's HTTPS endpoint from keep-alive connections over TLS, with
//! HTTP/1.1 or HTTP/2 (the API server's choice), sending AdmissionReviews back to back. It reports
//! requests/s, latency p50 / p99 / max, and the server's CPU time per request (from
//! `/proc/<pid>/stat`, user + system, across the run).
//!
//! ```text
//! meshop-webhook-load [--http 1|2] [--connections N] [--streams S] [--seconds S]
//!                     [--max-requests M] [--pod typical|env2000] [--server-cpus LIST]
//!                     [--client-cpus LIST] [--repeat R]
//!                     [--istiod]          also load Istio's own injector (pilot-discovery's /inject)
//!                                         on the same control plane, alternating with meshop
//!                     [--url URL --pid PID]  load any injector instead of starting one
//!                     [--pods N]          pod creation through the API server, with and without
//!                                         the webhook in the path
//!                     [--scale]           meshop's RSS and CPU idle, with 10,000 pods in 1,000
//!                                         namespaces, and while 100 namespaces are relabelled
//!                     [--hold N [--hold-limit S]]  N slow and idle clients held against the
//!                                         webhook while the load runs: when the server closes
//!                                         them, its RSS, the load's latency beside them
//!                     [--operator-arg ARG]  passed to `meshop run` (repeatable)
//! ```
//!
//! The client does not check the server's certificate (istiod's is for its Service name); the
//! handshake is otherwise complete. Everything runs on loopback; runs are bounded in time.

use std::collections::BTreeMap;
use std::sync::Arc;

/// `--help`: the flags, as in the module comment.
const USAGE: &str = "\
meshop-webhook-load: meshop's injection webhook measured the way it is deployed (docs/performance.md)

  --http 1|2            protocol (default 1)
  --connections N       keep-alive connections (default 1)
  --streams S           concurrent HTTP/2 streams per connection
  --seconds S           length of a run, 1-120 (default 10)
  --max-requests M      stop a run after M requests
  --pod typical|env2000 the pod under review
  --server-cpus LIST    pin the server (e.g. 0), --client-cpus LIST the load generator
  --repeat R            runs, 1-20
  --istiod              also load Istio's own injector on the same control plane, alternating
  --url URL --pid PID   load any injector instead of starting one
  --pods N              pod creation through the API server, with and without the webhook
  --scale               meshop's RSS and CPU idle, with 10,000 pods, while namespaces relabel
  --floor               also load the transport floor: meshop's own HTTPS server (TLS, HTTP,
                        tokio) in a process of its own, answering every review with meshop's
                        answer to it, fixed; what is left of meshop's CPU is the admission work
  --hold N              open N slow clients (a third each: half a request head, nothing after
                        the handshake, idle after one request) while a load run goes on; fails
                        unless the server closes every one within --hold-limit S (default 75)
                        seconds of its last byte; prints the server's RSS and the load beside them
  --operator-arg ARG    an argument for `meshop run` (repeatable), e.g.
                        --operator-arg=--webhook-max-connections=256
  --slowest N           also list a run's N slowest requests: when they started and their rank
                        on their connection (finds stalls tied to a connection's first requests)
";
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use meshop::api::MeshInstall;
use meshop_testenv::istio::{IstioBinaries, LocalIstiod};
use meshop_testenv::{ControlPlane, Options};
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::{Value, json};

#[derive(Clone, Debug)]
struct Args {
    http2: bool,
    connections: usize,
    streams: usize,
    seconds: u64,
    max_requests: usize,
    pod: String,
    server_cpus: Option<Vec<usize>>,
    client_cpus: Option<Vec<usize>>,
    repeat: usize,
    istiod: bool,
    url: Option<String>,
    pid: Option<u32>,
    pods: Option<usize>,
    scale: bool,
    slowest: usize,
    floor: bool,
    hold: usize,
    hold_limit: u64,
    operator_args: Vec<String>,
}

fn cpus(v: &str) -> anyhow::Result<Vec<usize>> {
    v.split(',')
        .map(|c| c.trim().parse().context("CPU lists look like 0 or 0,1"))
        .collect()
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        http2: false,
        connections: 1,
        streams: 1,
        seconds: 10,
        max_requests: 1_000_000,
        pod: "typical".into(),
        server_cpus: None,
        client_cpus: None,
        repeat: 1,
        istiod: false,
        url: None,
        pid: None,
        pods: None,
        scale: false,
        slowest: 0,
        floor: false,
        hold: 0,
        hold_limit: 75,
        operator_args: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if let Some(arg) = flag.strip_prefix("--operator-arg=") {
            a.operator_args.push(arg.to_string());
            continue;
        }
        match flag.as_str() {
            "--istiod" => {
                a.istiod = true;
                continue;
            }
            "--scale" => {
                a.scale = true;
                continue;
            }
            "--floor" => {
                a.floor = true;
                continue;
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            _ => {}
        }
        let value = it
            .next()
            .with_context(|| format!("{flag} needs a value (--help lists the flags)"))?;
        match flag.as_str() {
            "--http" => a.http2 = value == "2",
            "--connections" => a.connections = value.parse::<usize>()?.max(1),
            "--streams" => a.streams = value.parse::<usize>()?.max(1),
            "--seconds" => a.seconds = value.parse::<u64>()?.clamp(1, 120),
            "--max-requests" => a.max_requests = value.parse()?,
            "--pod" => a.pod = value,
            "--server-cpus" => a.server_cpus = Some(cpus(&value)?),
            "--client-cpus" => a.client_cpus = Some(cpus(&value)?),
            "--repeat" => a.repeat = value.parse::<usize>()?.clamp(1, 20),
            "--url" => a.url = Some(value),
            "--pid" => a.pid = Some(value.parse()?),
            "--pods" => a.pods = Some(value.parse::<usize>()?.clamp(1, 20_000)),
            "--slowest" => a.slowest = value.parse::<usize>()?.min(1000),
            "--hold" => a.hold = value.parse::<usize>()?.clamp(3, 15_000),
            "--hold-limit" => a.hold_limit = value.parse::<u64>()?.clamp(1, 600),
            "--operator-arg" => a.operator_args.push(value),
            other => bail!("unknown flag {other}"),
        }
    }
    ensure!(
        matches!(a.pod.as_str(), "typical" | "env2000"),
        "--pod is typical or env2000"
    );
    Ok(a)
}

/// Pins process (or thread) `pid` (0: the calling thread) to `cpus`.
fn pin(pid: u32, cpus: &[usize]) -> anyhow::Result<()> {
    // SAFETY: cpu_set_t is plain data, zeroed is the empty set; the pointer and size match.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        let rc = libc::sched_setaffinity(
            pid as libc::pid_t,
            std::mem::size_of::<libc::cpu_set_t>(),
            &set,
        );
        ensure!(
            rc == 0,
            "sched_setaffinity({pid}, {cpus:?}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Every CPU of the machine.
fn all_cpus() -> Vec<usize> {
    // SAFETY: sysconf has no preconditions. (available_parallelism would answer for this
    // thread's own, possibly pinned, set.)
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    (0..n).collect()
}

/// Runs `spawn` (which starts a process) with this thread pinned to the server CPUs, if given.
fn spawn_pinned<T>(args: &Args, spawn: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let Some(c) = &args.server_cpus else {
        return spawn();
    };
    pin(0, c)?;
    let out = spawn();
    pin(0, &all_cpus())?;
    out
}

/// Pins `pid` and all its threads (Go and tokio start theirs before we get to pin them).
fn pin_process(pid: u32, cpus: &[usize]) -> anyhow::Result<()> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        if let Some(tid) = task?.file_name().to_str().and_then(|t| t.parse().ok()) {
            pin(tid, cpus)?;
        }
    }
    Ok(())
}

/// User + system CPU time of process `pid` so far.
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3, state.
    let rest = stat.rsplit_once(')').context("unexpected /proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_micros(ticks * 1_000_000 / hz))
}

/// Resident set size of process `pid`, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS")?.parse()?)
}

/// The pod the load sends: two containers with ports and HTTP / TCP probes, owned by a
/// ReplicaSet; `env2000` adds 2,000 env vars to the first container.
fn pod_json(kind: &str, name: Option<&str>) -> Value {
    let mut env = vec![json!({ "name": "MODE", "value": "prod" })];
    if kind == "env2000" {
        env.extend(
            (0..2000).map(|i| json!({ "name": format!("VAR_{i}"), "value": format!("value-{i}") })),
        );
    }
    let mut metadata = json!({
        "labels": { "app": "web", "version": "v1", "pod-template-hash": "7d4c8b9f6" },
        "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4c8b9f6",
            "uid": "0c8b2a4e-7b1f-4f6e-9d2a-2f1e3c4d5b6a", "controller": true }]
    });
    match name {
        Some(n) => metadata["name"] = json!(n),
        None => metadata["generateName"] = json!("web-7d4c8b9f6-"),
    }
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": metadata,
        "spec": { "containers": [
            { "name": "web", "image": "example.com/web:1",
              "ports": [{ "containerPort": 8080, "name": "http" }, { "containerPort": 9090, "name": "grpc" }],
              "env": env,
              "readinessProbe": { "httpGet": { "path": "/ready", "port": 8080 } },
              "livenessProbe": { "tcpSocket": { "port": 8080 } },
              "resources": { "requests": { "cpu": "100m", "memory": "64Mi" } } },
            { "name": "log", "image": "example.com/log:1",
              "readinessProbe": { "httpGet": { "path": "/", "port": 8081 } } } ] }
    })
}

fn review(kind: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "00000000-0000-0000-0000-000000000001",
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "requestKind": { "group": "", "version": "v1", "kind": "Pod" },
            "requestResource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": "load", "operation": "CREATE",
            "userInfo": { "username": "system:serviceaccount:kube-system:replicaset-controller" },
            "object": pod_json(kind, None), "oldObject": null, "dryRun": false
        }
    }))
    .expect("static review")
}

/// Accepts any certificate, still checking the handshake's signatures.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_client(http2: bool) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![if http2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    Ok(Arc::new(cfg))
}

/// One load run's figures.
struct Report {
    requests: usize,
    per_second: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    /// Requests slower than 40 ms: the delayed-ACK timer's signature when Nagle holds a write.
    over_40ms: usize,
    cpu_per_request: Option<Duration>,
    /// `--slowest`: (latency, start since the run began, rank on its connection), slowest first.
    slowest: Vec<(Duration, Duration, usize)>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(
            f,
            "{:>7} requests {:>8.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  max {:>7.3} ms  >40 ms {:>4}  server CPU/request {}",
            self.requests,
            self.per_second,
            ms(self.p50),
            ms(self.p99),
            ms(self.max),
            self.over_40ms,
            self.cpu_per_request
                .map(|d| format!("{:.0} µs", d.as_secs_f64() * 1e6))
                .unwrap_or_else(|| "-".into())
        )?;
        for (latency, start, rank) in &self.slowest {
            write!(
                f,
                "\n    {:>7.3} ms, started at {:>7.3} s, request {rank} of its connection",
                ms(*latency),
                start.as_secs_f64()
            )?;
        }
        Ok(())
    }
}

/// A TLS connection to `host:port`, with `TCP_NODELAY` as the API server's client sets it.
async fn tls_connect(
    tls: &Arc<rustls::ClientConfig>,
    host: &str,
    port: u16,
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    Ok(tokio_rustls::TlsConnector::from(tls.clone())
        .connect(ServerName::try_from(host.to_string())?, tcp)
        .await?)
}

/// Drives `url` (`https://host:port/path`) with `args`' load; `pid` is the server's process.
async fn load(args: &Args, url: &str, pid: Option<u32>) -> anyhow::Result<Report> {
    let uri: hyper::Uri = url.parse().context("--url")?;
    let host = uri.host().context("URL without a host")?.to_string();
    let port = uri.port_u16().unwrap_or(443);
    let path = uri.path().to_string();
    let tls = tls_client(args.http2)?;
    let body = Bytes::from(review(&args.pod));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let loops = args.connections * if args.http2 { args.streams } else { 1 };
    let per_loop = args.max_requests.div_ceil(loops);
    let cpu_before = pid.map(cpu_time).transpose()?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let stream = tls_connect(&tls, &host, port).await?;
        let request = {
            let (body, url, path, host) =
                (body.clone(), url.to_string(), path.clone(), host.clone());
            let http2 = args.http2;
            move || {
                let builder = if http2 {
                    hyper::Request::post(url.as_str())
                } else {
                    hyper::Request::post(path.as_str()).header("host", host.as_str())
                };
                builder
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))
            }
        };
        if args.http2 {
            let (sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await?;
            tokio::spawn(conn);
            for _ in 0..args.streams {
                let mut sender = sender.clone();
                let request = request.clone();
                tasks.push(tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    while Instant::now() < deadline && latencies.len() < per_loop {
                        let t = Instant::now();
                        sender.ready().await?;
                        let response = sender.send_request(request()?).await?;
                        check(response).await?;
                        latencies.push((t.elapsed(), t - started, latencies.len()));
                    }
                    anyhow::Ok(latencies)
                }));
            }
        } else {
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline && latencies.len() < per_loop {
                    let t = Instant::now();
                    sender.ready().await?;
                    let response = sender.send_request(request()?).await?;
                    check(response).await?;
                    latencies.push((t.elapsed(), t - started, latencies.len()));
                }
                anyhow::Ok(latencies)
            }));
        }
    }
    // (latency, start since the run began, rank of the request on its connection or stream)
    let mut samples: Vec<(Duration, Duration, usize)> = Vec::new();
    for task in tasks {
        samples.extend(task.await??);
    }
    samples.sort();
    let slowest = samples.iter().rev().take(args.slowest).copied().collect();
    let latencies: Vec<Duration> = samples.iter().map(|s| s.0).collect();
    let elapsed = started.elapsed();
    let cpu = match (pid, cpu_before) {
        (Some(pid), Some(before)) => Some(cpu_time(pid)?.saturating_sub(before)),
        _ => None,
    };
    ensure!(!latencies.is_empty(), "no request completed");
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    Ok(Report {
        requests: latencies.len(),
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
        max: *latencies.last().expect("not empty"),
        over_40ms: latencies
            .iter()
            .filter(|l| **l > Duration::from_millis(40))
            .count(),
        cpu_per_request: cpu.map(|c| c / latencies.len() as u32),
        slowest,
    })
}

/// Fails unless the answer is a 200 AdmissionReview that carries a patch.
async fn check(response: hyper::Response<hyper::body::Incoming>) -> anyhow::Result<()> {
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    ensure!(
        status.is_success(),
        "HTTP {status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    let v: Value = serde_json::from_slice(&bytes)?;
    ensure!(
        v["response"]["allowed"] == true && v["response"]["patch"].is_string(),
        "no patch in {}",
        String::from_utf8_lossy(&bytes[..bytes.len().min(2000)])
    );
    Ok(())
}

/// Runs `f` on a fresh runtime on the client CPUs, so the load generator stays off the server's.
fn on_client_cpus<T: Send + 'static>(
    args: &Args,
    f: impl std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
) -> anyhow::Result<T> {
    let cpus = args.client_cpus.clone();
    std::thread::spawn(move || {
        if let Some(c) = &cpus {
            pin(0, c)?;
        }
        // Worker threads inherit the spawning thread's affinity.
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cpus.as_ref().map_or(2, |c| c.len()))
            .enable_all()
            .build()?
            .block_on(f)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("load thread panicked"))?
}

/// `--serve-fixed ADDR FILE`, started by `--floor` (not a user's flag): meshop's own HTTPS server
/// (`meshop::webhook::serve_listener`: the same TLS, HTTP/1.1 and HTTP/2 stack, `TCP_NODELAY`
/// and tokio runtime as `meshop run`) with one route that reads the review and answers FILE's
/// bytes, meshop's answer to that review. Its CPU per request is what serving costs before any
/// admission work: the transport floor.
fn serve_fixed(addr: &str, file: &str) -> anyhow::Result<()> {
    let answer = Bytes::from(std::fs::read(file).with_context(|| format!("read {file}"))?);
    let addr: std::net::SocketAddr = addr.parse().context("--serve-fixed ADDR")?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let bundle = meshop::webhook::CertBundle::generate(
                &[addr.ip().to_string()],
                Duration::from_secs(24 * 3600),
            )?;
            let resolver = meshop::webhook::CertResolver::new(bundle)?;
            let listener = meshop::webhook::bind(addr).await?;
            let route = axum::routing::post(move |review: Bytes| async move {
                // The review is read whole, as meshop reads it, and not decoded.
                drop(review);
                ([(hyper::header::CONTENT_TYPE, "application/json")], answer)
            });
            let router = axum::Router::new().route(meshop::webhook::WEBHOOK_PATH, route);
            meshop::webhook::serve_listener(
                listener,
                router,
                resolver,
                Default::default(),
                Default::default(),
            )
            .await
        })
}

/// meshop's answer to the load's review, fetched once over TLS.
async fn answer_of(args: &Args, url: &str) -> anyhow::Result<Bytes> {
    let uri: hyper::Uri = url.parse().context("--url")?;
    let host = uri.host().context("URL without a host")?.to_string();
    let stream = tls_connect(&tls_client(false)?, &host, uri.port_u16().unwrap_or(443)).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = hyper::Request::post(uri.path())
        .header("host", host.as_str())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(review(&args.pod))))?;
    let response = sender.send_request(request).await?;
    ensure!(response.status().is_success(), "HTTP {}", response.status());
    Ok(response.into_body().collect().await?.to_bytes())
}

fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.len() == 4 && argv[1] == "--serve-fixed" {
        return serve_fixed(&argv[2], &argv[3]);
    }
    let args = args()?;
    if let Some(url) = args.url.clone() {
        if let (Some(pid), Some(c)) = (args.pid, &args.server_cpus) {
            pin_process(pid, c)?;
        }
        for _ in 0..args.repeat {
            let a = args.clone();
            let u = url.clone();
            let report = on_client_cpus(&args, async move { load(&a, &u, a.pid).await })?;
            println!("{url}: {report}");
        }
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(with_cluster(args))
}

/// A control plane and `meshop run` with a MeshInstall (failurePolicy Fail) and namespace `load`
/// labelled for injection; then the measurements `args` ask for.
async fn with_cluster(args: Args) -> anyhow::Result<()> {
    let controllers = args.istiod || args.pods.is_some() || args.scale;
    let cp = tokio::task::block_in_place(|| {
        ControlPlane::start(Options {
            controllers,
            ..Options::default()
        })
    })?;
    let client = cp.client().await?;
    // Pinned from its first instruction (a child inherits the spawning thread's CPUs), as
    // `taskset` would: the runtime then sizes its worker threads to the CPUs it has.
    let operator = spawn_pinned(&args, || {
        meshop_testenv::start_operator(&cp, "meshop-load", &args.operator_args)
    })?;
    let meshop_pid = operator.process.pid();
    println!(
        "control plane in {}; meshop run (pid {meshop_pid}) webhook at https://{}/inject",
        cp.dir.display(),
        operator.webhook
    );
    if args.scale {
        // Idle first: before any MeshInstall, the operator only watches.
        tokio::time::sleep(Duration::from_secs(10)).await;
        report_usage("idle, no MeshInstall", meshop_pid, Duration::from_secs(10)).await?;
    }
    let mi: MeshInstall = serde_json::from_value(json!({
        "apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
        "metadata": { "name": "load" },
        "spec": { "profile": "minimal", "injection": { "failurePolicy": "Fail" } }
    }))?;
    Api::<MeshInstall>::all(client.clone())
        .create(&PostParams::default(), &mi)
        .await?;
    namespace(
        &client,
        "load",
        json!({ "istio-injection": "enabled" }),
        controllers,
    )
    .await?;
    let meshop_url = format!("https://{}/inject", operator.webhook);
    // The webhook answers once its watches have listed and the MeshInstall is seen.
    let warm = Args {
        seconds: 1,
        max_requests: 1,
        connections: 1,
        ..args.clone()
    };
    meshop_testenv::poll_until("meshop's webhook injects", Duration::from_secs(120), || {
        let (warm, url) = (warm.clone(), meshop_url.clone());
        async move { load(&warm, &url, None).await.map(|_| ()) }
    })
    .await?;

    if let Some(n) = args.pods {
        return pod_creation(&client, n).await;
    }
    if args.scale {
        return scale(&client, meshop_pid).await;
    }
    if args.hold > 0 {
        let (a, u, health) = (args.clone(), meshop_url.clone(), operator.health);
        return tokio::task::block_in_place(|| {
            on_client_cpus(&args, async move { hold(&a, &u, meshop_pid, health).await })
        });
    }
    let mut targets = vec![("meshop".to_string(), meshop_url.clone(), meshop_pid)];
    let _floor = if args.floor {
        let answer = tokio::task::block_in_place(|| {
            let (a, u) = (args.clone(), meshop_url.clone());
            on_client_cpus(&args, async move { answer_of(&a, &u).await })
        })?;
        let file = cp.dir.join("floor-answer.json");
        std::fs::write(&file, &answer)?;
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let floor = spawn_pinned(&args, || {
            meshop_testenv::process::Process::spawn(
                "floor",
                &std::env::current_exe()?,
                &[
                    "--serve-fixed".into(),
                    addr.to_string(),
                    file.display().to_string(),
                ],
                &cp.dir.join("floor.log"),
                &[],
            )
        })?;
        let url = format!("https://{addr}/inject");
        meshop_testenv::poll_until("the floor server answers", Duration::from_secs(30), || {
            let (warm, url) = (warm.clone(), url.clone());
            async move { load(&warm, &url, None).await.map(|_| ()) }
        })
        .await?;
        targets.push(("floor".to_string(), url, floor.pid()));
        Some(floor)
    } else {
        None
    };
    let _istiod = if args.istiod {
        let istiod = start_istiod(&args, &cp, &client).await?;
        let url = format!("https://{}/inject", istiod.https);
        let pid = istiod.process.pid();
        meshop_testenv::poll_until("istiod's /inject injects", Duration::from_secs(60), || {
            let (warm, url) = (warm.clone(), url.clone());
            async move { load(&warm, &url, None).await.map(|_| ()) }
        })
        .await?;
        targets.push(("istiod".to_string(), url, pid));
        Some(istiod)
    } else {
        None
    };
    println!(
        "pod {}, HTTP/{}, {} connection(s){}, {} s per run, server CPUs {:?}, client CPUs {:?}",
        args.pod,
        if args.http2 { 2 } else { 1 },
        args.connections,
        if args.http2 {
            format!(" x {} stream(s)", args.streams)
        } else {
            String::new()
        },
        args.seconds,
        args.server_cpus,
        args.client_cpus
    );
    // Alternating runs, so drift in the machine's load hits both servers alike.
    for round in 1..=args.repeat {
        for (name, url, pid) in &targets {
            let (a, u, p) = (args.clone(), url.clone(), *pid);
            let report = tokio::task::block_in_place(|| {
                on_client_cpus(&args, async move { load(&a, &u, Some(p)).await })
            })?;
            println!("run {round} {name:>7}: {report}");
        }
    }
    Ok(())
}

async fn namespace(
    client: &Client,
    name: &str,
    labels: Value,
    wait_for_account: bool,
) -> anyhow::Result<()> {
    let ns: Namespace =
        serde_json::from_value(json!({ "metadata": { "name": name, "labels": labels } }))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    if wait_for_account {
        // Pods need the namespace's default ServiceAccount, made by the controller manager.
        let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
        meshop_testenv::poll_until(
            &format!("default ServiceAccount in {name}"),
            Duration::from_secs(60),
            || {
                let sa = sa.clone();
                async move { sa.get_opt("default").await?.context("not yet").map(|_| ()) }
            },
        )
        .await?;
    }
    Ok(())
}

/// istiod (pilot-discovery) run locally on what meshop installed, with Istio's own injector
/// template and values (from `istioctl manifest generate`) in the ConfigMap it reads them from.
async fn start_istiod(
    args: &Args,
    cp: &ControlPlane,
    client: &Client,
) -> anyhow::Result<LocalIstiod> {
    let istio = IstioBinaries::locate()?;
    let ns = "istio-system";
    let meshes: Api<MeshInstall> = Api::all(client.clone());
    meshop_testenv::wait_for_kstatus(
        &meshes,
        "load",
        meshop::controller::status::KStatus::Current,
        Duration::from_secs(300),
    )
    .await;
    let out = std::process::Command::new(&istio.istioctl)
        .args(["manifest", "generate", "--set", "profile=minimal"])
        .output()?;
    ensure!(
        out.status.success(),
        "istioctl manifest generate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let mut data = BTreeMap::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let Ok(doc) = <Value as serde::Deserialize>::deserialize(doc) else {
            continue;
        };
        if doc["kind"] == "ConfigMap" && doc["metadata"]["name"] == "istio-sidecar-injector" {
            for key in ["config", "values"] {
                let v = doc["data"][key].as_str().context("injector ConfigMap")?;
                data.insert(key.to_string(), v.to_string());
            }
        }
    }
    ensure!(
        data.len() == 2,
        "no istio-sidecar-injector in istioctl's manifest"
    );
    let cm = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("istio-sidecar-injector".into()),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cm)
        .await?;
    // Pinned from the start, so Go sizes GOMAXPROCS to the CPUs it has.
    if let Some(c) = &args.server_cpus {
        pin(0, c)?;
    }
    let started = LocalIstiod::start(cp, client, &istio, ns, "istiod", "load").await;
    pin(0, &all_cpus())?;
    let mut istiod = started?;
    istiod.wait_ready(Duration::from_secs(120)).await?;
    println!(
        "istiod (pid {}) injector at https://{}/inject",
        istiod.process.pid(),
        istiod.https
    );
    Ok(istiod)
}

/// Creates `n` pods (8 at a time) in a namespace the webhook serves, then in one it does not
/// (the API server calls no webhook there), and prints pods/s and create latency for each.
async fn pod_creation(client: &Client, n: usize) -> anyhow::Result<()> {
    // The API server calls the webhook once the MeshInstall's registration is applied.
    let meshes: Api<MeshInstall> = Api::all(client.clone());
    meshop_testenv::poll_until(
        "the MeshInstall's webhook Active",
        Duration::from_secs(300),
        || {
            let meshes = meshes.clone();
            async move {
                let webhook = meshes.get("load").await?.status.and_then(|s| s.webhook);
                ensure!(
                    webhook
                        .as_ref()
                        .is_some_and(|w| w.state == meshop::api::WebhookState::Active),
                    "webhook {webhook:?}"
                );
                Ok(())
            }
        },
    )
    .await?;
    namespace(
        client,
        "pods-webhook",
        json!({ "istio-injection": "enabled" }),
        true,
    )
    .await?;
    namespace(client, "pods-plain", json!({}), true).await?;
    for (ns, injected) in [
        ("pods-webhook", true),
        ("pods-plain", false),
        ("pods-webhook", true),
    ] {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let started = Instant::now();
        let round = started.elapsed().as_nanos() as u64 ^ rand::random::<u64>();
        let mut latencies = Vec::new();
        let results = futures::stream::iter(0..n)
            .map(|i| {
                let pods = pods.clone();
                async move {
                    let pod: Pod = serde_json::from_value(pod_json(
                        "typical",
                        Some(&format!("p-{:x}-{i}", round & 0xffff)),
                    ))?;
                    let t = Instant::now();
                    let created = pods.create(&PostParams::default(), &pod).await?;
                    anyhow::Ok((t.elapsed(), created))
                }
            })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await;
        let elapsed = started.elapsed();
        for r in results {
            let (latency, pod) = r?;
            let has_proxy = pod.spec.as_ref().is_some_and(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
                    .any(|c| c.name == "istio-proxy")
            });
            ensure!(has_proxy == injected, "pod in {ns}: sidecar {has_proxy}");
            latencies.push(latency);
        }
        latencies.sort();
        let pct = |p: f64| {
            latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
                .as_secs_f64()
                * 1e3
        };
        println!(
            "{ns:>13} (webhook {}): {n} pods in {:.1} s: {:.0} pods/s, create p50 {:.1} ms, p99 {:.1} ms",
            if injected { "called" } else { "not called" },
            elapsed.as_secs_f64(),
            n as f64 / elapsed.as_secs_f64(),
            pct(0.5),
            pct(0.99)
        );
    }
    Ok(())
}

use futures::StreamExt;

/// Prints `pid`'s RSS and its CPU use over `window`.
async fn report_usage(what: &str, pid: u32, window: Duration) -> anyhow::Result<()> {
    let before = cpu_time(pid)?;
    tokio::time::sleep(window).await;
    let used = cpu_time(pid)?.saturating_sub(before);
    println!(
        "{what:<48} RSS {:>7} KiB  CPU {:>5.1}% of a core over {} s",
        rss_kib(pid)?,
        used.as_secs_f64() * 100.0 / window.as_secs_f64(),
        window.as_secs()
    );
    Ok(())
}

/// meshop's footprint while the cluster fills with pods in namespaces it does not serve, then
/// while 100 namespaces are labelled, relabelled and unlabelled, round after round.
async fn scale(client: &Client, pid: u32) -> anyhow::Result<()> {
    report_usage("MeshInstall installed, idle", pid, Duration::from_secs(10)).await?;
    let (namespaces, per_namespace) = (1000, 10);
    let cpu_before = cpu_time(pid)?;
    let started = Instant::now();
    futures::stream::iter(0..namespaces)
        .map(|i| async move {
            let name = format!("scale-{i:04}");
            namespace(
                client,
                &name,
                json!({ "team": format!("t{}", i % 7) }),
                true,
            )
            .await?;
            let pods: Api<Pod> = Api::namespaced(client.clone(), &name);
            for j in 0..per_namespace {
                let pod: Pod =
                    serde_json::from_value(pod_json("typical", Some(&format!("p-{j}"))))?;
                pods.create(&PostParams::default(), &pod).await?;
            }
            anyhow::Ok(())
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    let took = started.elapsed();
    println!(
        "created {namespaces} namespaces and {} pods in {:.0} s; meshop used {:.1} s of CPU meanwhile ({:.1}% of a core)",
        namespaces * per_namespace,
        took.as_secs_f64(),
        cpu_time(pid)?.saturating_sub(cpu_before).as_secs_f64(),
        cpu_time(pid)?.saturating_sub(cpu_before).as_secs_f64() * 100.0 / took.as_secs_f64()
    );
    report_usage(
        "10,000 pods in 1,000 other namespaces, idle",
        pid,
        Duration::from_secs(10),
    )
    .await?;
    let api: Api<Namespace> = Api::all(client.clone());
    let rounds = 5;
    let cpu_before = cpu_time(pid)?;
    let started = Instant::now();
    for round in 0..rounds {
        let labels = [
            json!({ "istio-injection": "enabled" }),
            json!({ "istio-injection": null, "istio.io/rev": "canary" }),
            json!({ "istio.io/rev": null }),
        ];
        for l in labels {
            futures::stream::iter(0..100)
                .map(|i| {
                    let api = api.clone();
                    let l = l.clone();
                    async move {
                        api.patch(
                            &format!("scale-{i:04}"),
                            &PatchParams::default(),
                            &Patch::Merge(json!({ "metadata": { "labels": l } })),
                        )
                        .await
                    }
                })
                .buffer_unordered(8)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()?;
        }
        println!("relabel round {}: RSS {} KiB", round + 1, rss_kib(pid)?);
    }
    let took = started.elapsed();
    let used = cpu_time(pid)?.saturating_sub(cpu_before);
    println!(
        "{} namespace label changes in {:.1} s: meshop used {:.2} s of CPU ({:.0} µs per change)",
        rounds * 300,
        took.as_secs_f64(),
        used.as_secs_f64(),
        used.as_secs_f64() * 1e6 / (rounds * 300) as f64
    );
    report_usage("after relabelling, idle", pid, Duration::from_secs(10)).await?;
    Ok(())
}

/// What a held connection does before it goes quiet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Slow {
    /// Sends half a request head.
    HalfHead,
    /// Sends nothing after the TLS handshake.
    Nothing,
    /// Sends one request, reads the answer, then keeps the connection idle.
    IdleAfterRequest,
}

/// One held connection: when its handshake completed (after waiting at the cap, if it did), and
/// how long after its last byte the server closed it (None: still open at the limit).
struct Held {
    kind: Slow,
    connect: Duration,
    closed_after: Option<Duration>,
}

async fn hold_one(
    tls: Arc<rustls::ClientConfig>,
    host: String,
    port: u16,
    kind: Slow,
    limit: Duration,
) -> anyhow::Result<Held> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let start = Instant::now();
    let mut stream = tls_connect(&tls, &host, port).await?;
    let connect = start.elapsed();
    match kind {
        Slow::HalfHead => {
            stream
                .write_all(b"POST /inject HTTP/1.1\r\nHost: meshop\r\nContent-Type: appl")
                .await?
        }
        Slow::Nothing => {}
        Slow::IdleAfterRequest => {
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: meshop\r\n\r\n")
                .await?;
            let mut seen = Vec::new();
            let mut buf = [0u8; 512];
            while !seen.ends_with(b"ok") {
                let n = stream.read(&mut buf).await?;
                ensure!(n > 0, "closed before answering /healthz");
                seen.extend_from_slice(&buf[..n]);
            }
        }
    }
    let quiet = Instant::now();
    let mut buf = [0u8; 512];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok();
    Ok(Held {
        kind,
        connect,
        closed_after: closed.then(|| quiet.elapsed()),
    })
}

/// meshop's /metrics line starting with `name`, read over plain HTTP from the health port.
async fn metric(health: std::net::SocketAddr, name: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(health).await?;
    tcp.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await?;
    let mut text = String::new();
    tcp.read_to_string(&mut text).await?;
    Ok(text
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_default()
        .to_string())
}

/// `--hold N`: a load run alone, then the same run while N slow clients connect (half a head,
/// nothing, idle after a request; a third each). Reports when the server closed them, its RSS,
/// and the load's latency beside them; fails if any stays open past `--hold-limit`.
async fn hold(
    args: &Args,
    url: &str,
    pid: u32,
    health: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let uri: hyper::Uri = url.parse().context("--url")?;
    let host = uri.host().context("URL without a host")?.to_string();
    let port = uri.port_u16().unwrap_or(443);
    let alone = load(args, url, Some(pid)).await?;
    println!("load alone:                 {alone}");
    let rss_before = rss_kib(pid)?;

    // The load's connections open first, as the API server's are already open; the slow
    // clients come half a second later and keep coming while the load runs.
    let tls = tls_client(false)?;
    let limit = Duration::from_secs(args.hold_limit);
    let kinds = [Slow::HalfHead, Slow::Nothing, Slow::IdleAfterRequest];
    let holders = {
        let (tls, host, n) = (tls.clone(), host.clone(), args.hold);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let tasks: Vec<_> = (0..n)
                .map(|i| {
                    tokio::spawn(hold_one(
                        tls.clone(),
                        host.clone(),
                        port,
                        kinds[i % 3],
                        limit,
                    ))
                })
                .collect();
            let mut held = Vec::new();
            for t in tasks {
                held.push(t.await??);
            }
            anyhow::Ok(held)
        })
    };
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let peak = {
        let sampling = sampling.clone();
        tokio::spawn(async move {
            let (mut rss, mut open) = (0u64, String::new());
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                let now = rss_kib(pid).unwrap_or(0);
                if now > rss {
                    rss = now;
                    open = metric(health, "meshop_webhook_open_connections")
                        .await
                        .unwrap_or_default();
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (rss, open)
        })
    };
    let beside = load(args, url, Some(pid)).await?;
    println!("load beside {:>5} slow clients: {beside}", args.hold);
    let held = holders.await??;
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let (rss_peak, open_at_peak) = peak.await?;

    let mut failures = Vec::new();
    for kind in kinds {
        let of_kind: Vec<&Held> = held.iter().filter(|h| h.kind == kind).collect();
        let mut closes: Vec<Duration> = of_kind.iter().filter_map(|h| h.closed_after).collect();
        closes.sort();
        let open = of_kind.len() - closes.len();
        let waited = of_kind
            .iter()
            .filter(|h| h.connect > Duration::from_secs(1))
            .count();
        let longest = of_kind.iter().map(|h| h.connect).max().unwrap_or_default();
        println!(
            "{kind:?}: {} held, {} waited over 1 s to connect (the cap; longest {:.1} s), closed by the server {:.1}-{:.1} s after their last byte, still open: {open}",
            of_kind.len(),
            waited,
            longest.as_secs_f64(),
            closes.first().unwrap_or(&Duration::ZERO).as_secs_f64(),
            closes.last().unwrap_or(&Duration::ZERO).as_secs_f64(),
        );
        if open > 0 {
            failures.push(format!(
                "{open} {kind:?} connections still open after {limit:?}"
            ));
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "meshop RSS: {rss_before} KiB before, {rss_peak} KiB at the peak ({}), {} KiB after; {}",
        open_at_peak.trim(),
        rss_kib(pid)?,
        metric(health, "meshop_webhook_connection_cap_waits").await?
    );
    ensure!(failures.is_empty(), "{}", failures.join("; "));
    Ok(())
}
