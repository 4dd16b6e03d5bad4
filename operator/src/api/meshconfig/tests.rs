use serde_json::json;

use super::*;

fn fields(v: Value) -> Vec<String> {
    check_fields("spec.meshConfig", &v)
}

#[test]
fn the_table_parses_and_starts_at_mesh_config() {
    let table = TABLE.as_ref().expect("fields.json parses");
    assert_eq!(table.root, "istio.mesh.v1alpha1.MeshConfig");
    assert!(table.messages[PROXY_CONFIG].contains_key("proxyMetadata"));
}

#[test]
fn a_production_mesh_config_is_accepted() {
    let mesh = json!({
        "accessLogFile": "/dev/stdout",
        "accessLogEncoding": "JSON",
        "enablePrometheusMerge": true,
        "discoverySelectors": [{"matchLabels": {"team": "a"}}, {"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]}],
        "defaultProviders": {"tracing": ["otel"], "metrics": ["prometheus"]},
        "extensionProviders": [
            {"name": "otel", "opentelemetry": {"service": "otel.observability.svc.cluster.local", "port": 4317}},
            {"name": "authz", "envoyExtAuthzHttp": {"service": "authz.sec.svc.cluster.local", "port": "8000", "includeRequestHeadersInCheck": ["x-user"]}},
        ],
        "defaultConfig": {
            "proxyMetadata": {"ISTIO_META_DNS_CAPTURE": "true"},
            "holdApplicationUntilProxyStarts": true,
            "drainDuration": "30s",
            "terminationDrainDuration": "1m30s",
            "tracing": {"sampling": 10},
            "concurrency": 2,
            "image": {"imageType": "distroless"},
            "proxyStatsMatcher": {"inclusionRegexps": [".*outlier.*"]},
        },
        "localityLbSetting": {"enabled": true},
        "trustDomainAliases": ["old.local"],
        "defaultDestinationRuleExportTo": ["."],
        "meshMTLS": {"minProtocolVersion": "TLSV1_3"},
        "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"},
        "connect_timeout": "5s",
    });
    assert_eq!(fields(mesh.clone()), Vec::<String>::new());
    assert_eq!(
        check_semantics("spec.meshConfig", &mesh),
        Vec::<String>::new()
    );
}

#[test]
fn unknown_fields_and_wrong_kinds_are_named_by_path() {
    assert_eq!(
        fields(json!({"defaultConfig": {"holdApplicationUntilProxyStart": true}})),
        [
            "spec.meshConfig.defaultConfig.holdApplicationUntilProxyStart: unknown field (not in Istio's ProxyConfig)"
        ]
    );
    assert_eq!(
        fields(json!({"enablePrometheusMerge": "yes"})),
        ["spec.meshConfig.enablePrometheusMerge: \"yes\" is not true or false"]
    );
    assert_eq!(
        fields(json!({"accessLogEncoding": "XML"})),
        ["spec.meshConfig.accessLogEncoding: \"XML\" is not one of TEXT, JSON"]
    );
    assert_eq!(
        fields(json!({"defaultConfig": {"drainDuration": "soon"}})),
        [
            "spec.meshConfig.defaultConfig.drainDuration: \"soon\" is not a duration such as 1.5s or 1m30s: expected a number before each unit"
        ]
    );
    assert_eq!(
        fields(json!({"extensionProviders": [{"name": "x", "zipkin": {"port": 70000000000i64}}]})),
        [
            "spec.meshConfig.extensionProviders[0].zipkin.port: 70000000000 is out of range for uint32"
        ]
    );
    assert_eq!(
        fields(json!({"defaultConfig": {"concurrency": -1, "proxyMetadata": {"A": 1}}})),
        ["spec.meshConfig.defaultConfig.proxyMetadata[A]: 1 is not a string"]
    );
}

#[test]
fn go_durations() {
    assert_eq!(go_duration("1.5s"), Ok(1_500_000_000));
    assert_eq!(go_duration("1m30s"), Ok(90_000_000_000));
    assert_eq!(go_duration("-1s"), Ok(-1_000_000_000));
    assert_eq!(go_duration("0"), Ok(0));
    assert_eq!(go_duration(".5ms"), Ok(500_000));
    assert!(go_duration("1").is_err());
    assert!(go_duration("1d").is_err());
    assert!(go_duration("").is_err());
}

#[test]
fn semantic_checks_mirror_istios() {
    let check = |v: Value| check_semantics("m", &v);
    assert_eq!(
        check(json!({"defaultConfig": {"drainDuration": "-1s"}})),
        [
            "m.defaultConfig.drainDuration: invalid drain duration: duration must be greater than 1ms"
        ]
    );
    assert_eq!(
        check(json!({"defaultConfig": {"drainDuration": "1500ms"}})),
        [
            "m.defaultConfig.drainDuration: invalid drain duration: drain time only supports durations to seconds precision"
        ]
    );
    assert_eq!(
        check(json!({"connectTimeout": "2h"})),
        ["m.connectTimeout: invalid connect timeout: duration must be no more than 1h0m0s"]
    );
    assert_eq!(
        check(json!({"extensionProviders": [
            {"name": "a", "envoyFileAccessLog": {"path": "/dev/stdout"}},
            {"name": "a", "envoyFileAccessLog": {"path": "/dev/stderr"}},
        ]})),
        ["m.extensionProviders[1]: duplicate extension provider name a"]
    );
    assert_eq!(
        check(
            json!({"extensionProviders": [{"name": "z", "zipkin": {"service": "zipkin", "port": 0}}]})
        ),
        [
            "m.extensionProviders[0]: invalid extension provider z: port number 0 must be in the range 1..65535"
        ]
    );
    assert_eq!(
        check(json!({"trustDomainAliases": ["Bad_Domain"]})),
        ["m.trustDomainAliases[0]: trust domain name \"Bad_Domain\" invalid"]
    );
    assert_eq!(
        check(json!({"defaultConfig": {"discoveryAddress": "istiod"}})),
        [
            "m.defaultConfig.discoveryAddress: invalid discovery address: unable to split \"istiod\": missing port in address"
        ]
    );
}

#[test]
fn merge_is_istios() {
    let mut base = json!({
        "defaultConfig": {"discoveryAddress": "istiod:15012", "tracing": {"sampling": 1}, "proxyMetadata": {"A": "1"}},
        "defaultProviders": {"metrics": ["prometheus"]},
        "extensionProviders": [{"name": "a", "zipkin": {"service": "z", "port": 9411}}],
        "trustDomainAliases": ["b.local", "a.local"],
        "outboundTrafficPolicy": {"mode": "ALLOW_ANY"},
    });
    let overlay = json!({
        "defaultConfig": {"tracing": {"zipkin": {"address": "z:9411"}}, "proxyMetadata": {"B": "2"}},
        "defaultProviders": {"tracing": ["a"]},
        "extensionProviders": [{"name": "c", "envoyFileAccessLog": {"path": "/dev/stdout"}}, {"name": "a", "zipkin": {"service": "y", "port": 1}}],
        "trustDomainAliases": ["c.local", "a.local"],
        "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"},
        "rootNamespace": null,
    });
    merge(base.as_object_mut().unwrap(), overlay.as_object().unwrap());
    assert_eq!(
        base,
        json!({
            "defaultConfig": {"discoveryAddress": "istiod:15012", "tracing": {"zipkin": {"address": "z:9411"}}, "proxyMetadata": {"A": "1", "B": "2"}},
            "defaultProviders": {"metrics": ["prometheus"], "tracing": ["a"]},
            "extensionProviders": [{"name": "a", "zipkin": {"service": "y", "port": 1}}, {"name": "c", "envoyFileAccessLog": {"path": "/dev/stdout"}}],
            "trustDomainAliases": ["a.local", "b.local", "c.local"],
            "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"},
        })
    );
}

#[test]
fn proxy_config_leaves_out_proto_defaults_as_istio_writes_it() {
    let mut c = json!({
        "controlPlaneAuthPolicy": "NONE", "interceptionMode": "TPROXY", "statusPort": 0,
        "holdApplicationUntilProxyStarts": false, "concurrency": 0, "discoveryAddress": "",
        "drainDuration": "12s", "tracing": { "sampling": 0, "zipkin": { "address": "" } },
    });
    drop_proxy_config_defaults(c.as_object_mut().unwrap());
    // Enums' first values, zero scalars and empty strings go; wrappers, durations and oneof
    // members stay.
    assert_eq!(
        c,
        json!({ "interceptionMode": "TPROXY", "holdApplicationUntilProxyStarts": false,
                "concurrency": 0, "drainDuration": "12s",
                "tracing": { "zipkin": {} } })
    );
}
