//! `make loadtest`: a load test of meshop's HTTPS admission endpoint on loopback.
//!
//! Serves the real webhook (router, rustls with a freshly minted certificate, an in-memory view
//! holding the demo profile and one labelled namespace) in this process, and drives it from
//! keep-alive HTTP/1.1 connections, each sending AdmissionReviews for a typical pod back to back.
//! Bounded in time and count; prints requests per second and latency percentiles.
//!
//!   meshop-webhook-load [--connections N] [--seconds S] [--max-requests M]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use meshop::effective::{Installation, Owner};
use meshop::webhook::{self, CertBundle, CertResolver, View};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::json;

struct Args {
    connections: usize,
    seconds: u64,
    max_requests: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        connections: 8,
        seconds: 10,
        max_requests: 1_000_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--connections" => a.connections = value.parse()?,
            "--seconds" => a.seconds = value.parse::<u64>()?.min(120),
            "--max-requests" => a.max_requests = value.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

fn review(i: usize) -> Vec<u8> {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": format!("web-{i}"), "namespace": "load", "labels": { "app": "web", "version": "v1" } },
        "spec": { "containers": [
            { "name": "web", "image": "example.com/web:1", "ports": [{ "containerPort": 8080, "name": "http" }],
              "env": [{ "name": "MODE", "value": "prod" }],
              "readinessProbe": { "httpGet": { "path": "/ready", "port": 8080 } },
              "livenessProbe": { "tcpSocket": { "port": 8080 } },
              "resources": { "requests": { "cpu": "100m", "memory": "64Mi" } } },
            { "name": "log", "image": "example.com/log:1" } ] }
    });
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("00000000-0000-0000-0000-{i:012}"),
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "requestKind": { "group": "", "version": "v1", "kind": "Pod" },
            "requestResource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": "load", "operation": "CREATE",
            "userInfo": { "username": "load" }, "object": pod, "dryRun": false
        }
    }))
    .expect("static review")
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    // The webhook, as `meshop run` serves it, on a free loopback port.
    let bundle = CertBundle::generate(
        &["localhost".into(), "127.0.0.1".into()],
        Duration::from_secs(3600),
    )?;
    let ca_pem = bundle.ca_pem.clone();
    let resolver = CertResolver::new(bundle)?;
    let view = View::new();
    let spec = serde_yaml::from_str("profile: demo\n")?;
    view.set_install(
        "demo",
        &Installation::resolve(
            Owner {
                name: "demo".into(),
                uid: None,
            },
            &spec,
        )?,
    );
    view.set_namespace(
        "load",
        BTreeMap::from([("istio-injection".to_string(), "enabled".to_string())]),
    );
    view.mark_synced();
    let listener = webhook::bind("127.0.0.1:0".parse()?).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(webhook::serve_listener(
        listener,
        webhook::router(view),
        resolver,
    ));

    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(ca?)?;
    }
    let tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let body = Bytes::from(review(0));
    println!(
        "webhook at https://{addr}{}; {} keep-alive connections for {} s (at most {} requests); request body {} bytes",
        webhook::WEBHOOK_PATH,
        args.connections,
        args.seconds,
        args.max_requests,
        body.len()
    );
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let per_connection = args.max_requests.div_ceil(args.connections.max(1));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.connections.max(1) {
        let tls = tls.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(ServerName::try_from("127.0.0.1")?.to_owned(), tcp)
                .await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let mut latencies = Vec::new();
            let mut patched = 0usize;
            while Instant::now() < deadline && latencies.len() < per_connection {
                let request = hyper::Request::post(webhook::WEBHOOK_PATH)
                    .header("host", "127.0.0.1")
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))?;
                let t = Instant::now();
                let response = sender.send_request(request).await?;
                let status = response.status();
                let bytes = response.into_body().collect().await?.to_bytes();
                latencies.push(t.elapsed());
                if !status.is_success() {
                    bail!("HTTP {status}: {}", String::from_utf8_lossy(&bytes));
                }
                if bytes.windows(8).any(|w| w == b"\"patch\":") {
                    patched += 1;
                }
            }
            anyhow::Ok((latencies, patched))
        }));
    }
    let mut latencies = Vec::new();
    let mut patched = 0;
    for task in tasks {
        let (l, p) = task.await??;
        latencies.extend(l);
        patched += p;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    if latencies.is_empty() {
        bail!("no request completed");
    }
    if patched != latencies.len() {
        bail!(
            "{} of {} responses carried no patch",
            latencies.len() - patched,
            latencies.len()
        );
    }
    println!(
        "{} requests in {:.1} s: {:.0} requests/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        latencies
            .last()
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or_default()
    );
    Ok(())
}
