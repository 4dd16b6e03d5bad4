//! Per-pod overrides read from `sidecar.istio.io/*`, `traffic.sidecar.istio.io/*` and
//! `proxy.istio.io/config`. Everything is validated up front, so a bad value becomes one clear
//! error instead of a pod that crash-loops or that the API server refuses.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::{Map, Value};

use super::{InjectError, InjectionConfig, keys, quantity, quoted};
use crate::istio_proxy::{self, ports};

/// The sidecar's settings for one pod: the mesh defaults with the pod's annotations applied.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    pub(crate) image: String,
    /// The capture init container's image: Istio's `ProxyInitImage`, which takes the pod's
    /// `sidecar.istio.io/proxyImage` and `proxyImageType` but not the ProxyConfig's image type.
    pub(crate) init_image: String,
    pub(crate) resources: ResourceRequirements,
    pub(crate) log_level: String,
    pub(crate) agent_log_level: String,
    pub(crate) hold_application: bool,
    /// The PROXY_CONFIG handed to pilot-agent, `concurrency` included.
    pub(crate) proxy_config: Map<String, Value>,
    pub(crate) rewrite_probes: bool,
    pub(crate) redirect: Redirect,
    /// pilot-agent's status port (`status.sidecar.istio.io/port`): where rewritten probes and
    /// the drain request go; 0 turns the proxy's readiness and startup probes off, as in Istio.
    pub(crate) status_port: u16,
    /// The proxy's readiness probe: initial delay, period and failure threshold
    /// (`readiness.status.sidecar.istio.io/*`).
    pub(crate) readiness: [i32; 3],
    /// How inbound and outbound traffic reaches the proxy (`sidecar.istio.io/interceptionMode`).
    pub(crate) interception: Interception,
    /// Volumes the pod asks to add for its proxy (`sidecar.istio.io/userVolume`), by name.
    pub(crate) user_volumes: Vec<k8s_openapi::api::core::v1::Volume>,
    /// Where the proxy mounts them (`sidecar.istio.io/userVolumeMount`), by name.
    pub(crate) user_mounts: Vec<k8s_openapi::api::core::v1::VolumeMount>,
}

/// Istio's interception modes. `REDIRECT` (NAT) is the mesh's; a pod may ask for `TPROXY` (the
/// original source address kept; the proxy then runs as root with `NET_ADMIN`, as Istio runs it)
/// or `NONE` (no capture at all, no redirect init container: the app talks to the proxy itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interception {
    Redirect,
    Tproxy,
    None,
}

impl Interception {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Interception::Redirect => "REDIRECT",
            Interception::Tproxy => "TPROXY",
            Interception::None => "NONE",
        }
    }
}

/// Istio's readiness defaults for the proxy: no initial delay, every 15 s, 4 failures.
pub(crate) const READINESS_DEFAULTS: [i32; 3] = [0, 15, 4];

/// The iptables redirect rules (flags of `istio-iptables`, or annotations the CNI agent reads).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Redirect {
    pub(crate) include_inbound_ports: String,
    /// The user's excluded inbound ports and the agent's status port, in Istio's order: what the
    /// CNI node agent reads from the pod annotation.
    pub(crate) exclude_inbound_ports_annotation: String,
    /// What istio-init excludes: Envoy's Prometheus and health ports, then the annotation's.
    pub(crate) exclude_inbound_ports: String,
    pub(crate) include_outbound_ranges: String,
    pub(crate) exclude_outbound_ranges: String,
    pub(crate) include_outbound_ports: Option<String>,
    pub(crate) exclude_outbound_ports: Option<String>,
    /// Virtual interfaces (KubeVirt VMs) whose traffic is redirected like the pod's own
    /// (`istio-iptables -k`): `istio.io/reroute-virtual-interfaces`, else the older
    /// `traffic.sidecar.istio.io/kubevirtInterfaces`, as Istio chooses.
    pub(crate) virtual_interfaces: Option<String>,
    /// Interfaces left out of capture (`istio-iptables -c`).
    pub(crate) exclude_interfaces: Option<String>,
}

const LOG_LEVELS: [&str; 8] = [
    "trace", "debug", "info", "warning", "warn", "error", "critical", "off",
];

/// pilot-agent's levels (`--log_output_level`); anything else stops the agent at start.
const AGENT_LOG_LEVELS: [&str; 6] = ["debug", "info", "warn", "error", "fatal", "none"];

/// `level` or `scope:level`, comma-separated, as pilot-agent reads `--log_output_level`.
fn valid_agent_log_level(v: &str) -> bool {
    v.split(',').all(|item| {
        let (scope, level) = item.split_once(':').unwrap_or(("default", item));
        !scope.is_empty()
            && scope
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && AGENT_LOG_LEVELS.contains(&level)
    })
}

/// The characters of an image reference (`registry:5000/path/name:tag@sha256:hex`), no more:
/// the value lands in the `image` field, and nothing else may ride along with it.
fn valid_image(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 512
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c))
}

/// Reads the pod's annotations on top of `cfg`.
pub(crate) fn settings(
    annotations: &BTreeMap<String, String>,
    cfg: &InjectionConfig,
) -> Result<Settings, InjectError> {
    let get = |key: &str| annotations.get(key).map(String::as_str);

    let ProxyConfig {
        config: proxy_config,
        hold: hold_application,
    } = proxy_config(get(keys::PROXY_CONFIG), cfg)?;

    let annotated_type = get(keys::PROXY_IMAGE_TYPE);
    if let Some(t) = annotated_type
        && !t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(InjectError::annotation(
            keys::PROXY_IMAGE_TYPE,
            t,
            "expected an image type such as distroless or debug",
        ));
    }
    let config_type = proxy_config
        .get("image")
        .and_then(|i| i.get("imageType"))
        .and_then(Value::as_str);
    if let Some(t) = config_type
        && !t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(InjectError::annotation(
            keys::PROXY_CONFIG,
            t,
            "image.imageType must be an image type such as distroless or debug",
        ));
    }
    // Istio's image types (`distroless`, `debug`) are a suffix of the tag: the pod's annotation
    // over the ProxyConfig's `image.imageType` (which the init container does not take).
    let with_type = |t: Option<&str>| match t {
        None | Some("" | "default") => cfg.proxy_image(),
        Some(t) => format!("{}-{t}", cfg.proxy_image()),
    };
    let (image, init_image) = match get(keys::PROXY_IMAGE) {
        Some(v) if !valid_image(v) => {
            return Err(InjectError::annotation(
                keys::PROXY_IMAGE,
                v,
                "expected an image reference such as registry.local/istio/proxyv2:1.31.1 (letters, digits and ._-/:@ only)",
            ));
        }
        Some(v) => (v.to_string(), v.to_string()),
        None => (
            with_type(annotated_type.or(config_type)),
            with_type(annotated_type),
        ),
    };

    let log_level = match get(keys::LOG_LEVEL) {
        Some(v) if !LOG_LEVELS.contains(&v) => {
            return Err(InjectError::annotation(
                keys::LOG_LEVEL,
                v,
                format!("expected one of {}", LOG_LEVELS.join(", ")),
            ));
        }
        Some(v) => v.to_string(),
        None => cfg.log_level.as_str().to_string(),
    };

    let agent_log_level = match get(keys::AGENT_LOG_LEVEL) {
        Some(v) if !valid_agent_log_level(v) => {
            return Err(InjectError::annotation(
                keys::AGENT_LOG_LEVEL,
                v,
                format!(
                    "expected level or scope:level pairs such as default:debug,xds:info; levels are {}",
                    AGENT_LOG_LEVELS.join(", ")
                ),
            ));
        }
        Some(v) => v.to_string(),
        None => "default:info".to_string(),
    };

    let interception = match get(keys::INTERCEPTION_MODE) {
        None | Some("REDIRECT") => Interception::Redirect,
        Some("TPROXY") => Interception::Tproxy,
        Some("NONE") => Interception::None,
        Some(v) => {
            return Err(InjectError::annotation(
                keys::INTERCEPTION_MODE,
                v,
                "expected REDIRECT, TPROXY or NONE",
            ));
        }
    };

    let rewrite_probes = match get(keys::REWRITE_PROBES) {
        None => true,
        Some(v) => parse_bool(v).ok_or_else(|| {
            InjectError::annotation(keys::REWRITE_PROBES, v, "expected true or false")
        })?,
    };

    let status_port = match get(keys::STATUS_PORT) {
        None => ports::AGENT_STATUS,
        Some(v) => v.trim().parse::<u16>().map_err(|_| {
            InjectError::annotation(keys::STATUS_PORT, v, "expected a port number, 0 to 65535")
        })?,
    };
    let mut readiness = READINESS_DEFAULTS;
    for (i, key) in [
        keys::READINESS_INITIAL_DELAY,
        keys::READINESS_PERIOD,
        keys::READINESS_FAILURE_THRESHOLD,
    ]
    .into_iter()
    .enumerate()
    {
        if let Some(v) = get(key) {
            readiness[i] = v
                .trim()
                .parse::<u32>()
                .ok()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| {
                    InjectError::annotation(key, v, "expected a non-negative whole number")
                })?;
        }
    }

    Ok(Settings {
        image,
        init_image,
        resources: resources(annotations, cfg)?,
        log_level,
        agent_log_level,
        hold_application,
        proxy_config,
        rewrite_probes,
        redirect: redirect(annotations, status_port)?,
        status_port,
        readiness,
        interception,
        user_volumes: named_objects(get(keys::USER_VOLUME), keys::USER_VOLUME)?,
        user_mounts: named_objects(get(keys::USER_VOLUME_MOUNT), keys::USER_VOLUME_MOUNT)?,
    })
}

/// A JSON object of name -> object (a Volume or a VolumeMount without its name), as Istio's
/// `userVolume` annotations hold them: the objects with their names set, sorted by name (Istio's
/// template ranges over the map in key order).
fn named_objects<T: serde::de::DeserializeOwned>(
    value: Option<&str>,
    key: &str,
) -> Result<Vec<T>, InjectError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let bad = |reason: String| InjectError::annotation(key, value, reason);
    let parsed: BTreeMap<String, Value> =
        serde_json::from_str(value).map_err(|e| bad(format!("expected a JSON object: {e}")))?;
    parsed
        .into_iter()
        .map(|(name, mut object)| {
            let Value::Object(fields) = &mut object else {
                return Err(bad(format!("{name:?} is not an object")));
            };
            fields.insert("name".into(), Value::String(name.clone()));
            serde_json::from_value(object).map_err(|e| bad(format!("{name:?}: {e}")))
        })
        .collect()
}

/// A boolean as Go's `strconv.ParseBool` reads it (Istio reads some annotations so).
pub(crate) fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "True" | "TRUE" => Some(true),
        "0" | "f" | "F" | "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// Istio's rule: if any resource annotation is present, the proxy's resources come from the
/// annotations alone (mixing them with the defaults could yield a request above a limit).
fn resources(
    annotations: &BTreeMap<String, String>,
    cfg: &InjectionConfig,
) -> Result<ResourceRequirements, InjectError> {
    let specs = [
        (keys::PROXY_CPU, false, "cpu"),
        (keys::PROXY_MEMORY, false, "memory"),
        (keys::PROXY_CPU_LIMIT, true, "cpu"),
        (keys::PROXY_MEMORY_LIMIT, true, "memory"),
    ];
    if !specs
        .iter()
        .any(|(key, _, _)| annotations.contains_key(*key))
    {
        return Ok(cfg.proxy_resources.clone());
    }
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    let mut values = BTreeMap::new();
    for (key, is_limit, resource) in specs {
        let Some(v) = annotations.get(key) else {
            continue;
        };
        let parsed =
            quantity::parse(v).map_err(|reason| InjectError::annotation(key, v, reason))?;
        values.insert((resource, is_limit), (key, v, parsed));
        let target = if is_limit { &mut limits } else { &mut requests };
        target.insert(resource.to_string(), Quantity(v.trim().to_string()));
    }
    for resource in ["cpu", "memory"] {
        if let (Some((rk, rv, r)), Some((lk, lv, l))) = (
            values.get(&(resource, false)),
            values.get(&(resource, true)),
        ) && r > l
        {
            return Err(InjectError::annotation(
                rk,
                rv,
                format!("the request is above the limit {lk}={}", quoted(lv)),
            ));
        }
    }
    Ok(ResourceRequirements {
        requests: (!requests.is_empty()).then_some(requests),
        limits: (!limits.is_empty()).then_some(limits),
        ..Default::default()
    })
}

/// The merged PROXY_CONFIG and the setting of it that also shapes the pod.
struct ProxyConfig {
    config: Map<String, Value>,
    hold: bool,
}

/// PROXY_CONFIG: the discovery address, then the mesh's hold / concurrency, then the pod's
/// `proxy.istio.io/config` on top (YAML or JSON), less what equals the agent's own defaults (as
/// Istio writes it). Istio's template passes concurrency here, not as pilot-agent's old
/// `--concurrency` flag.
fn proxy_config(
    annotation: Option<&str>,
    cfg: &InjectionConfig,
) -> Result<ProxyConfig, InjectError> {
    // The mesh's defaultConfig, as Istio's injector starts from it.
    let mut config = cfg.default_config.clone();
    config
        .entry("discoveryAddress")
        .or_insert_with(|| Value::String(cfg.discovery_address()));
    let mut hold = cfg.hold_application_until_proxy_starts;
    let mut concurrency = cfg.concurrency;
    if let Some(text) = annotation {
        let bad = |reason: String| InjectError::annotation(keys::PROXY_CONFIG, text, reason);
        let parsed: Value =
            serde_yaml::from_str(text).map_err(|e| bad(format!("not YAML or JSON: {e}")))?;
        let Value::Object(overrides) = parsed else {
            return Err(bad("expected a mapping of ProxyConfig fields".into()));
        };
        if let Some(v) = overrides.get("holdApplicationUntilProxyStarts") {
            hold = v.as_bool().ok_or_else(|| {
                bad("holdApplicationUntilProxyStarts must be true or false".into())
            })?;
        }
        if let Some(v) = overrides.get("concurrency") {
            let n = v.as_i64().filter(|n| (0..=i64::from(i32::MAX)).contains(n));
            concurrency = Some(
                n.ok_or_else(|| bad("concurrency must be a non-negative integer".into()))? as i32,
            );
        }
        // Istio's MergeProxyConfig: fields replace, proxyMetadata merges key by key.
        for (k, v) in overrides {
            match (k.as_str(), config.get_mut(&k), v) {
                ("proxyMetadata", Some(Value::Object(base)), Value::Object(extra)) => {
                    base.extend(extra);
                }
                (_, _, v) => {
                    config.insert(k, v);
                }
            }
        }
    }
    if hold {
        config.insert("holdApplicationUntilProxyStarts".into(), Value::Bool(true));
    }
    if let Some(n) = concurrency {
        config.insert("concurrency".into(), Value::from(n));
    }
    crate::api::meshconfig::drop_proxy_config_defaults(&mut config);
    istio_proxy::without_agent_defaults(&mut config);
    Ok(ProxyConfig { config, hold })
}

fn redirect(
    annotations: &BTreeMap<String, String>,
    status_port: u16,
) -> Result<Redirect, InjectError> {
    let get = |key: &str| annotations.get(key).map(String::as_str);
    // Istio's order: Envoy's own ports, the user's, then the agent's status port last.
    let user_ports = get(keys::EXCLUDE_INBOUND_PORTS)
        .map(|v| port_list(keys::EXCLUDE_INBOUND_PORTS, v, false))
        .transpose()?
        .unwrap_or_default();
    // The status port is excluded too, unless it is 0 or the user excluded it already.
    let status = status_port.to_string();
    let mut excluded: Vec<&str> = user_ports.split(',').filter(|p| !p.is_empty()).collect();
    if status_port != 0 && !excluded.contains(&status.as_str()) {
        excluded.push(&status);
    }
    let exclude_inbound_ports_annotation = excluded.join(",");
    let exclude_inbound_ports = if exclude_inbound_ports_annotation.is_empty() {
        format!("{},{}", ports::ENVOY_PROMETHEUS, ports::HEALTH)
    } else {
        format!(
            "{},{},{exclude_inbound_ports_annotation}",
            ports::ENVOY_PROMETHEUS,
            ports::HEALTH
        )
    };
    Ok(Redirect {
        include_inbound_ports: get(keys::INCLUDE_INBOUND_PORTS)
            .map(|v| port_list(keys::INCLUDE_INBOUND_PORTS, v, true))
            .transpose()?
            .unwrap_or_else(|| "*".into()),
        exclude_inbound_ports,
        exclude_inbound_ports_annotation,
        include_outbound_ranges: get(keys::INCLUDE_OUTBOUND_IP_RANGES)
            .map(|v| cidr_list(keys::INCLUDE_OUTBOUND_IP_RANGES, v, true))
            .transpose()?
            .unwrap_or_else(|| "*".into()),
        exclude_outbound_ranges: get(keys::EXCLUDE_OUTBOUND_IP_RANGES)
            .map(|v| cidr_list(keys::EXCLUDE_OUTBOUND_IP_RANGES, v, false))
            .transpose()?
            .unwrap_or_default(),
        include_outbound_ports: get(keys::INCLUDE_OUTBOUND_PORTS)
            .map(|v| port_list(keys::INCLUDE_OUTBOUND_PORTS, v, false))
            .transpose()?,
        exclude_outbound_ports: get(keys::EXCLUDE_OUTBOUND_PORTS)
            .map(|v| port_list(keys::EXCLUDE_OUTBOUND_PORTS, v, false))
            .transpose()?,
        virtual_interfaces: get(keys::REROUTE_VIRTUAL_INTERFACES)
            .or_else(|| get(keys::KUBEVIRT_INTERFACES))
            .map(String::from),
        exclude_interfaces: get(keys::EXCLUDE_INTERFACES).map(String::from),
    })
}

/// A comma-separated list of ports 1-65535 (or `*` where allowed), normalised without spaces.
fn port_list(key: &str, value: &str, star_ok: bool) -> Result<String, InjectError> {
    if star_ok && value.trim() == "*" {
        return Ok("*".into());
    }
    let items = split_list(value);
    for item in &items {
        if !matches!(item.parse::<u16>(), Ok(p) if p > 0) {
            return Err(InjectError::annotation(
                key,
                value,
                format!("{} is not a port number (1-65535)", quoted(item)),
            ));
        }
    }
    Ok(items.join(","))
}

/// A comma-separated list of CIDRs such as `10.0.0.0/8,fd00::/8` (or `*` where allowed).
fn cidr_list(key: &str, value: &str, star_ok: bool) -> Result<String, InjectError> {
    if star_ok && value.trim() == "*" {
        return Ok("*".into());
    }
    let items = split_list(value);
    for item in &items {
        if !valid_cidr(item) {
            return Err(InjectError::annotation(
                key,
                value,
                format!("{} is not a CIDR such as 10.0.0.0/8", quoted(item)),
            ));
        }
    }
    Ok(items.join(","))
}

fn split_list(value: &str) -> Vec<&str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

fn valid_cidr(s: &str) -> bool {
    let Some((addr, prefix)) = s.split_once('/') else {
        return false;
    };
    let (Ok(addr), Ok(prefix)) = (addr.parse::<IpAddr>(), prefix.parse::<u8>()) else {
        return false;
    };
    prefix <= if addr.is_ipv4() { 32 } else { 128 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::testutil::{cfg, labels};

    fn with(pairs: &[(&str, &str)]) -> Result<Settings, InjectError> {
        settings(&labels(pairs), &cfg())
    }

    fn err_of(pairs: &[(&str, &str)]) -> String {
        match with(pairs) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{pairs:?} should be refused"),
        }
    }

    #[test]
    fn defaults_come_from_the_config() {
        let s = with(&[]).unwrap();
        assert_eq!(s.image, "docker.io/istio/proxyv2:1.28.2");
        assert_eq!(s.resources, cfg().proxy_resources);
        assert_eq!(s.log_level, "warning");
        assert_eq!(s.agent_log_level, "default:info");
        assert!(s.rewrite_probes);
        assert!(!s.hold_application);
        // The default istiod is the agent's own default, left out as Istio leaves it out.
        assert_eq!(s.proxy_config.get("discoveryAddress"), None);
        assert_eq!(s.redirect.include_inbound_ports, "*");
        assert_eq!(s.redirect.exclude_inbound_ports, "15090,15021,15020");
        assert_eq!(s.redirect.include_outbound_ranges, "*");
        assert_eq!(s.redirect.exclude_outbound_ranges, "");
        assert_eq!(s.redirect.exclude_outbound_ports, None);
    }

    #[test]
    fn resource_annotations_replace_the_defaults() {
        let s = with(&[
            (keys::PROXY_CPU, "250m"),
            (keys::PROXY_MEMORY_LIMIT, "512Mi"),
        ])
        .unwrap();
        assert_eq!(
            s.resources.requests,
            Some(BTreeMap::from([("cpu".into(), Quantity("250m".into()))]))
        );
        assert_eq!(
            s.resources.limits,
            Some(BTreeMap::from([(
                "memory".into(),
                Quantity("512Mi".into())
            )]))
        );
        let s = with(&[
            (keys::PROXY_CPU_LIMIT, "1"),
            (keys::PROXY_MEMORY, "64Mi"),
            (keys::PROXY_CPU, "500m"),
            (keys::PROXY_MEMORY_LIMIT, "1Gi"),
        ])
        .unwrap();
        assert_eq!(s.resources.limits.unwrap()["cpu"], Quantity("1".into()));
    }

    #[test]
    fn bad_quantities_are_refused() {
        let e = err_of(&[(keys::PROXY_MEMORY, "lots")]);
        assert!(
            e.contains("sidecar.istio.io/proxyMemory") && e.contains("lots"),
            "{e}"
        );
        let e = err_of(&[(keys::PROXY_CPU, "2"), (keys::PROXY_CPU_LIMIT, "1")]);
        assert!(e.contains("above the limit"), "{e}");
        assert!(with(&[(keys::PROXY_CPU_LIMIT, "-1")]).is_err());
    }

    #[test]
    fn image_and_log_levels() {
        let s = with(&[
            (keys::PROXY_IMAGE, "registry.local/proxy:dev"),
            (keys::LOG_LEVEL, "debug"),
            (keys::AGENT_LOG_LEVEL, "default:debug,xds:info"),
        ])
        .unwrap();
        assert_eq!(
            (
                s.image.as_str(),
                s.log_level.as_str(),
                s.agent_log_level.as_str()
            ),
            (
                "registry.local/proxy:dev",
                "debug",
                "default:debug,xds:info"
            )
        );
        assert!(err_of(&[(keys::LOG_LEVEL, "loud")]).contains("expected one of"));
        assert!(with(&[(keys::PROXY_IMAGE, "")]).is_err());
        assert!(with(&[(keys::AGENT_LOG_LEVEL, "a b")]).is_err());
    }

    #[test]
    fn traffic_annotations_are_validated_and_normalised() {
        let s = with(&[
            (keys::INCLUDE_INBOUND_PORTS, "8080, 9090"),
            (keys::EXCLUDE_INBOUND_PORTS, "9999"),
            (keys::INCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/8,fd00::/8"),
            (keys::EXCLUDE_OUTBOUND_IP_RANGES, "169.254.169.254/32"),
            (keys::EXCLUDE_OUTBOUND_PORTS, "3306,5432"),
            (keys::INCLUDE_OUTBOUND_PORTS, "443"),
        ])
        .unwrap();
        let r = s.redirect;
        assert_eq!(r.include_inbound_ports, "8080,9090");
        assert_eq!(r.exclude_inbound_ports, "15090,15021,9999,15020");
        assert_eq!(r.exclude_inbound_ports_annotation, "9999,15020");
        assert_eq!(r.include_outbound_ranges, "10.0.0.0/8,fd00::/8");
        assert_eq!(r.exclude_outbound_ranges, "169.254.169.254/32");
        assert_eq!(r.exclude_outbound_ports.as_deref(), Some("3306,5432"));
        assert_eq!(r.include_outbound_ports.as_deref(), Some("443"));
        assert_eq!(
            with(&[(keys::INCLUDE_INBOUND_PORTS, "")])
                .unwrap()
                .redirect
                .include_inbound_ports,
            ""
        );
    }

    #[test]
    fn bad_ports_and_cidrs_are_refused() {
        for (key, value) in [
            (keys::INCLUDE_INBOUND_PORTS, "http"),
            (keys::EXCLUDE_INBOUND_PORTS, "70000"),
            (keys::EXCLUDE_INBOUND_PORTS, "*"),
            (keys::EXCLUDE_OUTBOUND_PORTS, "0"),
            (keys::INCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0"),
            (keys::EXCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/33"),
            (keys::EXCLUDE_OUTBOUND_IP_RANGES, "*"),
        ] {
            let e = err_of(&[(key, value)]);
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn proxy_config_annotation_merges_and_controls_hold() {
        let s = with(&[(
            keys::PROXY_CONFIG,
            "holdApplicationUntilProxyStarts: true\nconcurrency: 4\ntracing: {sampling: 10}",
        )])
        .unwrap();
        assert!(s.hold_application);
        assert_eq!(s.proxy_config["concurrency"], 4);
        assert_eq!(
            s.proxy_config["holdApplicationUntilProxyStarts"],
            Value::Bool(true)
        );
        assert_eq!(s.proxy_config["tracing"]["sampling"], 10);
        assert!(!s.proxy_config.contains_key("discoveryAddress"));
        let s = settings(
            &labels(&[(
                keys::PROXY_CONFIG,
                r#"{"holdApplicationUntilProxyStarts": false}"#,
            )]),
            &InjectionConfig {
                hold_application_until_proxy_starts: true,
                ..cfg()
            },
        )
        .unwrap();
        assert!(!s.hold_application);
        assert!(err_of(&[(keys::PROXY_CONFIG, "[1, 2]")]).contains("mapping"));
        assert!(
            err_of(&[(keys::PROXY_CONFIG, "holdApplicationUntilProxyStarts: maybe")])
                .contains("true or false")
        );
        assert!(err_of(&[(keys::PROXY_CONFIG, "concurrency: -2")]).contains("non-negative"));
        assert!(with(&[(keys::PROXY_CONFIG, "{unclosed")]).is_err());
    }

    #[test]
    fn other_switches() {
        assert!(
            !with(&[(keys::REWRITE_PROBES, "false")])
                .unwrap()
                .rewrite_probes
        );
        assert!(with(&[(keys::REWRITE_PROBES, "perhaps")]).is_err());
        assert!(with(&[(keys::INTERCEPTION_MODE, "REDIRECT")]).is_ok());
        assert_eq!(
            with(&[(keys::INTERCEPTION_MODE, "TPROXY")])
                .unwrap()
                .interception,
            Interception::Tproxy
        );
        assert!(
            err_of(&[(keys::INTERCEPTION_MODE, "SPLICE")]).contains("REDIRECT, TPROXY or NONE")
        );
    }

    #[test]
    fn revision_changes_the_discovery_address() {
        let c = InjectionConfig {
            revision: "canary".into(),
            ..cfg()
        };
        let s = settings(&BTreeMap::new(), &c).unwrap();
        assert_eq!(
            s.proxy_config["discoveryAddress"],
            "istiod-canary.istio-system.svc:15012"
        );
    }
}
