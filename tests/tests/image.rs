//! The operator image (image/build.sh, `make image`): built with no container engine, unpacked
//! here, its binary run from the unpacked root filesystem alone (chroot, as the image's user),
//! and its config checked against what deploy/ and the chart expect.
//!
//! The test packages the meshop binary next to it (or `MESHOP_BIN`), as the release build takes
//! minutes; `make image` packages the release binary the same way.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let path = layout.join("blobs/sha256").join(hex);
    // The layout is content-addressed: every blob is what its digest says.
    let sum = run(Command::new("sha256sum").arg(&path));
    assert!(sum.starts_with(hex), "blob {digest} is corrupt");
    path
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Runs the image's binary inside its root filesystem only, as the image's user.
fn in_image(rootfs: &Path, user: &str, args: &[&str]) -> String {
    let mut cmd = if unsafe { libc::geteuid() } == 0 {
        Command::new("chroot")
    } else {
        // Without root, a user namespace in which we are root may chroot.
        let mut c = Command::new("unshare");
        c.args(["--map-root-user", "chroot"]);
        c
    };
    cmd.arg(format!("--userspec={user}"))
        .arg(rootfs)
        .arg("/usr/local/bin/meshop")
        .args(args)
        .env_clear()
        // Only to find chroot; the image has no PATH to search.
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    run(&mut cmd)
}

#[test]
fn the_image_runs_from_its_own_root_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("image");
    let binary = meshop_testenv::meshop_binary().unwrap();
    run(Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../image/build.sh"))
        .env("MESHOP_IMAGE_BINARY", &binary)
        .env("MESHOP_IMAGE_OUT", &out));

    // Unpack the OCI archive as a registry client would read it.
    let version = meshop::deploy::VERSION;
    let archive = out.join(format!("meshop-{version}.oci.tar"));
    let layout = dir.path().join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&layout));
    assert_eq!(
        json(&layout.join("oci-layout"))["imageLayoutVersion"],
        "1.0.0"
    );
    let index = json(&layout.join("index.json"));
    let entry = &index["manifests"][0];
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        format!("meshop:{version}")
    );
    let manifest = json(&blob(&layout, entry["digest"].as_str().unwrap()));
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let config = json(&blob(
        &layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );

    // The config: non-root, `meshop run`, the ports the Deployment names, the labels.
    assert_eq!(
        (config["os"].as_str(), config["architecture"].as_str()),
        (Some("linux"), Some("amd64"))
    );
    let c = &config["config"];
    assert_eq!(c["User"], "65532:65532");
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!(["/usr/local/bin/meshop"])
    );
    assert_eq!(c["Cmd"], serde_json::json!(["run"]));
    let mut ports: Vec<&str> = c["ExposedPorts"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    ports.sort();
    assert_eq!(
        ports,
        [
            format!("{}/tcp", meshop::deploy::METRICS_PORT),
            format!("{}/tcp", meshop::deploy::WEBHOOK_PORT)
        ]
    );
    let labels = &c["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], version);
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    assert!(labels["org.opencontainers.image.source"].is_string());
    assert!(labels["org.opencontainers.image.revision"].is_string());
    // The user is the one the Deployment runs as (its runAsNonRoot needs a numeric uid).
    let deployment = &meshop::deploy::operator_objects(&meshop::deploy::Workload::defaults())[0];
    let pod_user = &deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"];
    assert_eq!(
        c["User"].as_str().unwrap().split(':').next().unwrap(),
        pod_user.to_string()
    );

    // The root filesystem: the binary, its loader and libraries, passwd; no shell.
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let layer = blob(&layout, layers[0]["digest"].as_str().unwrap());
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&layer)
        .arg("-C")
        .arg(&rootfs));
    assert!(rootfs.join("usr/local/bin/meshop").exists());
    assert!(!rootfs.join("bin/sh").exists(), "no shell in the image");
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.contains(":65532:65532:"), "{passwd}");

    let version_out = in_image(&rootfs, "65532:65532", &["version"]);
    assert!(
        version_out.contains(&format!("meshop {version}")),
        "{version_out}"
    );
    let help = in_image(&rootfs, "65532:65532", &["run", "--help"]);
    assert!(
        help.contains("--webhook-addr") && help.contains("--leader-elect"),
        "{help}"
    );

    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    eprintln!(
        "image: layer {} bytes compressed, archive {} bytes, binary {} bytes (from {})",
        size(&layer),
        size(&archive),
        size(&rootfs.join("usr/local/bin/meshop")),
        binary.display()
    );
}
