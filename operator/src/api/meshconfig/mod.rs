//! Istio's MeshConfig as meshop carries it: checked the way istiod reads it, and merged the way
//! istiod merges it onto its defaults.
//!
//! - [`check_fields`] walks a mesh config against [`fields.json`](fields.json), the fields of
//!   `istio.mesh.v1alpha1.MeshConfig` and of every message reachable from it (JSON and proto
//!   names, kinds, enums), dumped from the proto descriptors compiled into the istio.io/api
//!   module Istio's binaries are built from (`tests/istio-judges/meshconfig table`; regenerated
//!   and compared by `make meshconfig-table` and `tests/tests/meshconfig.rs`). Values are read as
//!   istiod's JSON decoder (golang/protobuf's `jsonpb`) reads them: integers also as strings,
//!   enums by name or number, durations in Go's syntax (`1.5s`, `1m30s`), wrappers as their
//!   value. An unknown field is an error here where istiod ignores it: a field istiod ignores is
//!   a typo or a field of another Istio version, and the user should hear of it.
//! - [`check_semantics`] mirrors the checks of Istio's `agent.ValidateMeshConfig` on the fields it
//!   checks (ports, durations, addresses, trust domains, service settings, mesh TLS) and the
//!   extension-provider checks istiod only logs (it then drops the provider where it is used).
//!   meshop also refuses two extension providers of one name in one list, which istiod merges
//!   silently (the later wins).
//! - [`merge`] is `mesh.ApplyMeshConfig`: what istiod does with the ConfigMap meshop writes.

use std::collections::{BTreeSet, HashMap};
use std::sync::LazyLock;

use serde::Deserialize;
use serde_json::{Map, Value};

/// The generated field table (see the module's documentation).
pub const FIELDS_JSON: &str = include_str!("fields.json");

#[derive(Debug, Deserialize)]
struct Table {
    root: String,
    messages: HashMap<String, HashMap<String, Field>>,
    enums: HashMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Field {
    kind: String,
    #[serde(default)]
    repeated: bool,
    #[serde(default)]
    map: bool,
    #[serde(default)]
    map_key: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "enum")]
    enum_: Option<String>,
    /// The oneof the field belongs to: set, even to its zero value, it is present.
    #[serde(default)]
    oneof: Option<String>,
    proto: String,
}

static TABLE: LazyLock<Option<Table>> = LazyLock::new(|| serde_json::from_str(FIELDS_JSON).ok());

const PROXY_CONFIG: &str = "istio.mesh.v1alpha1.ProxyConfig";

/// Removes the fields of a ProxyConfig (recursively, through its messages) that hold their
/// proto3 default (an enum's first value, false, 0, ""), as Istio writes `PROXY_CONFIG`: its
/// JSON marshalling leaves unpopulated scalars out. Wrapper types (such as `concurrency`) and
/// other messages are values, never defaults, and stay.
pub fn drop_proxy_config_defaults(config: &mut Map<String, Value>) {
    if let Some(table) = TABLE.as_ref() {
        drop_defaults(table, PROXY_CONFIG, config);
    }
}

fn drop_defaults(table: &Table, message: &str, value: &mut Map<String, Value>) {
    let Some(fields) = table.messages.get(message) else {
        return;
    };
    value.retain(|name, v| {
        let Some(field) = fields.get(name) else {
            return true;
        };
        if field.repeated || field.map || field.oneof.is_some() {
            return true;
        }
        match field.kind.as_str() {
            "bool" => v != &Value::Bool(false),
            "string" => v != &Value::String(String::new()),
            "int32" | "uint32" | "double" => v.as_f64() != Some(0.0),
            "enum" => {
                let first = field
                    .enum_
                    .as_ref()
                    .and_then(|e| table.enums.get(e))
                    .and_then(|values| values.first());
                !(v.as_i64() == Some(0)
                    || v.as_str().is_some_and(|s| Some(&s.to_string()) == first))
            }
            _ => true,
        }
    });
    for (name, v) in value.iter_mut() {
        if let (Some(field), Value::Object(inner)) = (fields.get(name), v)
            && field.kind == "message"
            && !field.map
            && !field.repeated
            && let Some(m) = &field.message
        {
            drop_defaults(table, m, inner);
        }
    }
}

/// Checks `value` (a mesh config object) field by field; `path` prefixes every message, such as
/// `spec.meshConfig`. Returns every problem found.
pub fn check_fields(path: &str, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    match TABLE.as_ref() {
        Some(table) => check_message(table, &table.root, path, value, &mut errors),
        None => errors.push("meshop's MeshConfig field table does not parse (a meshop bug)".into()),
    }
    errors
}

/// [`check_fields`] for a ProxyConfig (`defaultConfig`, or a pod's `proxy.istio.io/config`).
pub fn check_proxy_config(path: &str, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    if let Some(table) = TABLE.as_ref() {
        check_message(table, PROXY_CONFIG, path, value, &mut errors);
    }
    errors
}

fn find<'a>(fields: &'a HashMap<String, Field>, key: &str) -> Option<&'a Field> {
    fields
        .get(key)
        .or_else(|| fields.values().find(|f| f.proto == key))
}

fn check_message(table: &Table, name: &str, path: &str, value: &Value, errors: &mut Vec<String>) {
    if value.is_null() {
        return;
    }
    if let Some(problem) = well_known(name, value) {
        errors.push(format!("{path}: {problem}"));
        return;
    }
    if name.starts_with("google.protobuf.") {
        return;
    }
    let Some(fields) = table.messages.get(name) else {
        return;
    };
    let Value::Object(object) = value else {
        errors.push(format!(
            "{path}: expected an object ({}), got {}",
            short(name),
            kind_of(value)
        ));
        return;
    };
    for (key, v) in object {
        let at = format!("{path}.{key}");
        let Some(field) = find(fields, key) else {
            errors.push(format!(
                "{at}: unknown field (not in Istio's {})",
                short(name)
            ));
            continue;
        };
        check_field(table, field, &at, v, errors);
    }
}

fn check_field(table: &Table, field: &Field, path: &str, value: &Value, errors: &mut Vec<String>) {
    if value.is_null() {
        return;
    }
    if field.map {
        let Value::Object(entries) = value else {
            errors.push(format!(
                "{path}: expected an object, got {}",
                kind_of(value)
            ));
            return;
        };
        for (k, v) in entries {
            let key_kind = field.map_key.as_deref().unwrap_or("string");
            if key_kind != "string" && scalar(key_kind, &Value::String(k.clone())).is_some() {
                errors.push(format!("{path}: key {k:?} is not a {key_kind}"));
            }
            check_single(table, field, &format!("{path}[{k}]"), v, errors);
        }
    } else if field.repeated {
        let Value::Array(items) = value else {
            errors.push(format!("{path}: expected a list, got {}", kind_of(value)));
            return;
        };
        for (i, item) in items.iter().enumerate() {
            check_single(table, field, &format!("{path}[{i}]"), item, errors);
        }
    } else {
        check_single(table, field, path, value, errors);
    }
}

fn check_single(table: &Table, field: &Field, path: &str, value: &Value, errors: &mut Vec<String>) {
    match field.kind.as_str() {
        "message" => {
            if let Some(m) = &field.message {
                check_message(table, m, path, value, errors);
            }
        }
        "enum" => {
            let names = field
                .enum_
                .as_ref()
                .and_then(|e| table.enums.get(e))
                .map(Vec::as_slice)
                .unwrap_or_default();
            match value {
                Value::String(s) if names.iter().any(|n| n == s) => {}
                Value::Number(n) if n.is_i64() => {}
                _ => errors.push(format!(
                    "{path}: {value} is not one of {}",
                    names.join(", ")
                )),
            }
        }
        kind => {
            if let Some(problem) = scalar(kind, value) {
                errors.push(format!("{path}: {problem}"));
            }
        }
    }
}

fn short(name: &str) -> &str {
    name.strip_prefix("istio.mesh.v1alpha1.").unwrap_or(name)
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A scalar as jsonpb reads it: `None` when fine, else why not.
fn scalar(kind: &str, value: &Value) -> Option<String> {
    let integer = |min: i128, max: i128| -> Option<String> {
        let n: Option<i128> = match value {
            Value::Number(n) => n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from)),
            Value::String(s) => s.parse().ok(),
            _ => None,
        };
        match n {
            Some(n) if (min..=max).contains(&n) => None,
            Some(n) => Some(format!("{n} is out of range for {kind}")),
            None => Some(format!("{value} is not an integer ({kind})")),
        }
    };
    match kind {
        "bool" => (!value.is_boolean()).then(|| format!("{value} is not true or false")),
        "string" => (!value.is_string()).then(|| format!("{value} is not a string")),
        "bytes" => (!value.is_string()).then(|| format!("{value} is not a base64 string")),
        "int32" | "sint32" | "sfixed32" => integer(i32::MIN.into(), i32::MAX.into()),
        "uint32" | "fixed32" => integer(0, u32::MAX.into()),
        "int64" | "sint64" | "sfixed64" => integer(i64::MIN.into(), i64::MAX.into()),
        "uint64" | "fixed64" => integer(0, u64::MAX.into()),
        "float" | "double" => match value {
            Value::Number(_) => None,
            Value::String(s)
                if s.parse::<f64>().is_ok() || ["NaN", "Infinity", "-Infinity"].contains(&&**s) =>
            {
                None
            }
            _ => Some(format!("{value} is not a number")),
        },
        _ => None,
    }
}

/// The well-known types by name: `Some(problem)` when `value` does not fit.
fn well_known(name: &str, value: &Value) -> Option<String> {
    let wrapped = |kind: &str| scalar(kind, value);
    match name {
        "google.protobuf.Duration" => match value.as_str() {
            Some(s) => go_duration(s)
                .err()
                .map(|e| format!("{value} is not a duration such as 1.5s or 1m30s: {e}")),
            None => Some(format!("{value} is not a duration such as \"1.5s\"")),
        },
        "google.protobuf.BoolValue" => wrapped("bool"),
        "google.protobuf.StringValue" => wrapped("string"),
        "google.protobuf.BytesValue" => wrapped("bytes"),
        "google.protobuf.Int32Value" => wrapped("int32"),
        "google.protobuf.UInt32Value" => wrapped("uint32"),
        "google.protobuf.Int64Value" => wrapped("int64"),
        "google.protobuf.UInt64Value" => wrapped("uint64"),
        "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => wrapped("double"),
        "google.protobuf.Struct" | "google.protobuf.Empty" | "google.protobuf.Any" => {
            (!value.is_object()).then(|| format!("{value} is not an object"))
        }
        "google.protobuf.ListValue" => {
            (!value.is_array()).then(|| format!("{value} is not a list"))
        }
        "google.protobuf.Timestamp" => {
            (!value.is_string()).then(|| format!("{value} is not an RFC 3339 timestamp"))
        }
        _ => None,
    }
}

/// Go's `time.ParseDuration`, which istiod's JSON decoder uses for durations: nanoseconds.
pub fn go_duration(s: &str) -> Result<i128, String> {
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err("empty".into());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let number = &rest[..digits];
        rest = &rest[digits..];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err("expected a number before each unit".into());
        }
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err("missing unit".into()),
            other => return Err(format!("unknown unit {other:?}")),
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        let whole: i128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| "number too large".to_string())?
        };
        let mut value = whole * scale;
        let mut divisor: i128 = 1;
        let mut fraction: i128 = 0;
        for d in frac.bytes().take(18) {
            fraction = fraction * 10 + i128::from(d - b'0');
            divisor *= 10;
        }
        value += fraction * scale / divisor;
        total += value;
        if total > i128::from(i64::MAX) {
            return Err("out of range".into());
        }
    }
    Ok(if negative { -total } else { total })
}

const MS: i128 = 1_000_000;
const SECOND: i128 = 1_000_000_000;

fn duration_at(mesh: &Value, pointer: &str) -> Option<i128> {
    mesh.pointer(pointer)
        .and_then(Value::as_str)
        .and_then(|s| go_duration(s).ok())
}

/// Istio's `ValidateDuration`: at least 1ms, whole milliseconds.
fn valid_duration(ns: i128) -> Result<(), String> {
    if ns < MS {
        return Err("duration must be greater than 1ms".into());
    }
    if ns % MS != 0 {
        return Err("only durations to ms precision are supported".into());
    }
    Ok(())
}

fn valid_port(n: i64) -> Result<(), String> {
    if (1..=65535).contains(&n) {
        Ok(())
    } else {
        Err(format!("port number {n} must be in the range 1..65535"))
    }
}

fn dns1123_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

fn dns1123_labels(domain: &str) -> Result<(), String> {
    let parts: Vec<&str> = domain.split('.').collect();
    let top = parts.last().copied().unwrap_or_default();
    if !top.is_empty() && top.parse::<i64>().is_ok() {
        return Err(format!(
            "domain name {domain:?} invalid (top level domain {top:?} cannot be all-numeric)"
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        if i == parts.len() - 1 && label.is_empty() {
            return Ok(());
        }
        if !dns1123_label(label) {
            return Err(format!(
                "domain name {domain:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    Ok(())
}

fn dns_preconditions(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    if name.len() > 255 {
        return Err(format!("domain name {name:?} too long (max 255)"));
    }
    Ok(())
}

fn fqdn(name: &str) -> Result<(), String> {
    dns_preconditions(name)?;
    dns1123_labels(name)
}

fn wildcard_domain(domain: &str) -> Result<(), String> {
    dns_preconditions(domain)?;
    let (first, rest) = match domain.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (domain, None),
    };
    let wildcard_label =
        first == "*" || first.strip_prefix("*").is_some_and(dns1123_label) || dns1123_label(first);
    if !wildcard_label {
        return Err(format!(
            "domain name {domain:?} invalid (label {first:?} invalid)"
        ));
    }
    rest.map_or(Ok(()), dns1123_labels)
}

fn ip(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok()
}

/// Istio's `ValidateProxyAddress`: `host:port`, the host a name or an IP.
fn proxy_address(addr: &str) -> Result<(), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("unable to split {addr:?}: missing port in address"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: i64 = port
        .parse()
        .map_err(|_| format!("port ({port}) is not a number"))?;
    valid_port(port)?;
    if fqdn(host).is_err() && !ip(host) {
        return Err(format!("{host:?} is not a valid hostname or an IP address"));
    }
    Ok(())
}

/// Istio's `ValidateTrustDomain`.
fn trust_domain(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    let parts: Vec<&str> = domain.split('.').collect();
    for (i, label) in parts.iter().enumerate() {
        if i == parts.len() - 1 && label.is_empty() {
            return Ok(());
        }
        if !dns1123_label(label) {
            return Err(format!("trust domain name {domain:?} invalid"));
        }
    }
    Ok(())
}

fn int_at(v: &Value, key: &str) -> Option<i64> {
    match v.get(key)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Istio's extension-provider service: a host name, an IP, or `namespace/host`.
fn provider_service(service: &str) -> Result<(), String> {
    if service.is_empty() {
        return Err("service must not be empty".into());
    }
    match service.split_once('/') {
        None => {
            if fqdn(service).is_err() && !ip(service) {
                return Err(format!(
                    "invalid service fmt {service}: {service} is not a valid IP"
                ));
            }
            Ok(())
        }
        Some((ns, host)) => {
            if ns.is_empty() || host.is_empty() {
                return Err("config namespace and dnsName in host entry cannot be empty".into());
            }
            let n = ns.trim_start_matches('~');
            if !n.is_empty() && n != "*" && n != "." && !dns1123_label(n) {
                return Err(format!("invalid namespace value {ns:?} in sidecar"));
            }
            if host != "*" && !host.contains('.') {
                return Err("short names (non FQDN) are not allowed".into());
            }
            if host.contains('*') && host.len() != 1 && !host.starts_with("*.") {
                return Err(format!("partial wildcard {host:?} not allowed"));
            }
            wildcard_domain(host)
        }
    }
}

/// The kinds of extension provider whose service and port Istio checks.
const SERVICE_PROVIDERS: &[&str] = &[
    "envoyExtAuthzHttp",
    "envoyExtAuthzGrpc",
    "zipkin",
    "datadog",
    "skywalking",
    "opencensus",
    "envoyOtelAls",
    "opentelemetry",
    "envoyHttpAls",
    "envoyTcpAls",
];

fn check_provider(provider: &Map<String, Value>) -> Vec<String> {
    let mut errs = Vec::new();
    for kind in SERVICE_PROVIDERS {
        let Some(p) = provider.get(*kind).filter(|p| p.is_object()) else {
            continue;
        };
        if let Err(e) = valid_port(int_at(p, "port").unwrap_or(0)) {
            errs.push(e);
        }
        if let Err(e) = provider_service(p.get("service").and_then(Value::as_str).unwrap_or("")) {
            errs.push(e);
        }
        if kind.starts_with("envoyExtAuthz")
            && let Some(status) = p.get("statusOnError").and_then(Value::as_str)
            && !status.is_empty()
            && !status
                .parse::<i32>()
                .is_ok_and(|c| ENVOY_STATUS_CODES.contains(&c))
        {
            errs.push(format!("unsupported statusOnError value {status}"));
        }
        if *kind == "envoyExtAuthzHttp"
            && let Some(prefix) = p.get("pathPrefix").and_then(Value::as_str)
            && !prefix.is_empty()
            && !prefix.starts_with('/')
        {
            errs.push(format!(
                "pathPrefix should begin with `/` but found {prefix:?}"
            ));
        }
        if *kind == "opentelemetry" && p.get("grpc").is_some() && p.get("http").is_some() {
            errs.push("OpenTelemetryTracingProvider cannot specify both grpc and http".into());
        }
    }
    errs
}

/// Envoy's `type.v3.StatusCode` values (the HTTP codes Envoy names), which `statusOnError` must be.
const ENVOY_STATUS_CODES: &[i32] = &[
    0, 100, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305, 307,
    308, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417,
    421, 422, 423, 424, 426, 428, 429, 431, 500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511,
];

/// The checks of Istio's `ValidateMeshConfig` (and the extension-provider checks istiod logs) on
/// `mesh`, the mesh config as istiod will read it (meshop's defaults with the user's values
/// merged), for the fields they cover. `path` prefixes messages.
pub fn check_semantics(path: &str, mesh: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    let mut err = |field: &str, e: String| errs.push(format!("{path}.{field}: {e}"));
    if let Some(p) = int_at(mesh, "proxyListenPort")
        && let Err(e) = valid_port(p)
    {
        err("proxyListenPort", format!("invalid proxy listen port: {e}"));
    }
    if let Some(d) = duration_at(mesh, "/connectTimeout") {
        let r = valid_duration(d).and_then(|()| {
            if d > 3600 * SECOND {
                Err("duration must be no more than 1h0m0s".into())
            } else {
                Ok(())
            }
        });
        if let Err(e) = r {
            err("connectTimeout", format!("invalid connect timeout: {e}"));
        }
    }
    if let Some(d) = duration_at(mesh, "/protocolDetectionTimeout")
        && d != 0
        && d % MS != 0
    {
        err(
            "protocolDetectionTimeout",
            "invalid protocol detection timeout: only durations to ms precision are supported"
                .into(),
        );
    }
    if let Some(pc) = mesh.get("defaultConfig").filter(|v| v.is_object()) {
        let mut pc_err = |field: &str, e: String| err(&format!("defaultConfig.{field}"), e);
        for field in ["configPath", "binaryPath", "serviceCluster"] {
            if pc.get(field).and_then(Value::as_str) == Some("") {
                pc_err(field, "must not be empty".into());
            }
        }
        if let Some(d) = duration_at(pc, "/drainDuration") {
            let r = valid_duration(d).and_then(|()| {
                if d % SECOND != 0 {
                    Err("drain time only supports durations to seconds precision".into())
                } else {
                    Ok(())
                }
            });
            if let Err(e) = r {
                pc_err("drainDuration", format!("invalid drain duration: {e}"));
            }
        }
        match pc.get("discoveryAddress").and_then(Value::as_str) {
            Some("") => pc_err(
                "discoveryAddress",
                "discovery address must be set to the proxy discovery service".into(),
            ),
            Some(a) => {
                if let Err(e) = proxy_address(a) {
                    pc_err(
                        "discoveryAddress",
                        format!("invalid discovery address: {e}"),
                    );
                }
            }
            None => {}
        }
        for (field, pointer) in [
            ("tracing.zipkin.address", "/tracing/zipkin/address"),
            ("statsdUdpAddress", "/statsdUdpAddress"),
            ("envoyMetricsServiceAddress", "/envoyMetricsServiceAddress"),
            (
                "envoyMetricsService.address",
                "/envoyMetricsService/address",
            ),
            (
                "envoyAccessLogService.address",
                "/envoyAccessLogService/address",
            ),
        ] {
            if let Some(a) = pc.pointer(pointer).and_then(Value::as_str)
                && (!a.is_empty() || field == "tracing.zipkin.address")
                && let Err(e) = proxy_address(&a.replacen("$(HOST_IP)", "127.0.0.1", 1))
            {
                pc_err(field, e);
            }
        }
        for field in ["proxyAdminPort", "statusPort"] {
            if let Some(p) = int_at(pc, field)
                && let Err(e) = valid_port(p)
            {
                pc_err(field, e);
            }
        }
        if let Some(policy) = pc.get("controlPlaneAuthPolicy")
            && !matches!(policy.as_str(), Some("NONE" | "MUTUAL_TLS"))
            && !matches!(policy.as_i64(), Some(0 | 1))
        {
            pc_err(
                "controlPlaneAuthPolicy",
                format!("unrecognized control plane auth policy {policy}"),
            );
        }
    }
    if let Some(td) = mesh.get("trustDomain").and_then(Value::as_str)
        && let Err(e) = trust_domain(td)
    {
        err("trustDomain", e);
    }
    if let Some(Value::Array(aliases)) = mesh.get("trustDomainAliases") {
        for (i, a) in aliases.iter().enumerate() {
            if let Some(a) = a.as_str()
                && let Err(e) = trust_domain(a)
            {
                err(&format!("trustDomainAliases[{i}]"), e);
            }
        }
    }
    if let Some(Value::Array(settings)) = mesh.get("serviceSettings") {
        for (i, s) in settings.iter().enumerate() {
            for h in s
                .get("hosts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if let Err(e) = wildcard_domain(h) {
                    err(
                        &format!("serviceSettings[{i}].hosts"),
                        format!("host `{h}`: {e}"),
                    );
                }
            }
        }
    }
    if mesh
        .pointer("/meshMTLS/ecdhCurves")
        .is_some_and(|c| !c.is_null())
    {
        err(
            "meshMTLS.ecdhCurves",
            "mesh TLS does not support ECDH curves configuration".into(),
        );
    }
    if let Some(Value::Array(providers)) = mesh.get("extensionProviders") {
        let mut names = BTreeSet::new();
        for (i, p) in providers.iter().enumerate() {
            let Some(p) = p.as_object() else { continue };
            let name = p.get("name").and_then(Value::as_str).unwrap_or("");
            let at = format!("extensionProviders[{i}]");
            if name.is_empty() {
                err(&at, "empty extension provider name".into());
            } else if !names.insert(name) {
                err(&at, format!("duplicate extension provider name {name}"));
            }
            for e in check_provider(p) {
                err(&at, format!("invalid extension provider {name}: {e}"));
            }
        }
    }
    errs
}

/// `mesh.ApplyMeshConfig`: `overlay` onto `base`, as istiod applies its ConfigMap onto its
/// defaults. A field the overlay sets replaces the base's (a message as a whole, a list as a
/// whole; null means unset), except:
/// - `defaultConfig` merges field by field (each field the overlay sets replaces the base's),
///   its `proxyMetadata` key by key;
/// - `defaultProviders` merges field by field;
/// - `extensionProviders` merge by name: a provider of a name the base has replaces it in place,
///   others are appended in order;
/// - `trustDomainAliases` is the union of both, sorted, without duplicates.
pub fn merge(base: &mut Map<String, Value>, overlay: &Map<String, Value>) {
    for (key, value) in overlay {
        if value.is_null() {
            continue;
        }
        match (key.as_str(), base.get_mut(key)) {
            ("defaultConfig", Some(Value::Object(pc))) if value.is_object() => {
                for (k, v) in value.as_object().into_iter().flatten() {
                    if v.is_null() {
                        continue;
                    }
                    match (k.as_str(), pc.get_mut(k)) {
                        ("proxyMetadata", Some(Value::Object(m))) if v.is_object() => {
                            for (mk, mv) in v.as_object().into_iter().flatten() {
                                m.insert(mk.clone(), mv.clone());
                            }
                        }
                        _ => {
                            pc.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            ("defaultProviders", Some(Value::Object(dp))) if value.is_object() => {
                for (k, v) in value.as_object().into_iter().flatten() {
                    if !v.is_null() {
                        dp.insert(k.clone(), v.clone());
                    }
                }
            }
            ("extensionProviders", Some(Value::Array(list))) if value.is_array() => {
                for p in value.as_array().into_iter().flatten() {
                    let name = p.get("name");
                    match list.iter_mut().find(|e| e.get("name") == name) {
                        Some(existing) => *existing = p.clone(),
                        None => list.push(p.clone()),
                    }
                }
            }
            ("trustDomainAliases", Some(Value::Array(list))) if value.is_array() => {
                let all: BTreeSet<String> = list
                    .iter()
                    .chain(value.as_array().into_iter().flatten())
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect();
                *list = all.into_iter().map(Value::String).collect();
            }
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests;
