#!/usr/bin/env bash
# Builds meshop's operator image without a container engine (`make image`): the release binary,
# exactly the shared libraries it loads (none when it is linked statically), a passwd entry for
# the non-root user, packaged by image/ocibuild (go-containerregistry) as an OCI image layout
# and an OCI archive. image/Containerfile is the same image for CI systems that have an engine.
#
#   image/build.sh                     # -> $TARGET/image/oci/ and $TARGET/image/meshop-<v>.oci.tar
#   MESHOP_IMAGE_BINARY=path ...       # package this meshop binary instead of a release build
#   MESHOP_IMAGE_OUT=dir ...           # write there instead of $CARGO_TARGET_DIR/image
#   MESHOP_IMAGE_SOURCE=url ...        # the org.opencontainers.image.source label
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-${ROOT}/target}"
OUT="${MESHOP_IMAGE_OUT:-${TARGET}/image}"
CACHE_ROOT="${MESHOP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshop}"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "${ROOT}/Cargo.toml" | head -1)"

log() { echo "[image $(date +%H:%M:%S)] $*" >&2; }

# The packer, built once per source change (like the test judges).
key=$(cd "${ROOT}/image/ocibuild" && cat go.mod go.sum main.go | sha256sum | cut -c1-16)
OCIBUILD="${CACHE_ROOT}/ocibuild/${key}/ocibuild"
if [[ ! -x "${OCIBUILD}" ]]; then
  log "building image/ocibuild"
  mkdir -p "$(dirname "${OCIBUILD}")"
  (cd "${ROOT}/image/ocibuild" && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-buildvcs=false -mod=readonly" \
    go build -trimpath -ldflags "-s -w" -o "${OCIBUILD}.tmp" . && mv "${OCIBUILD}.tmp" "${OCIBUILD}")
fi

BINARY="${MESHOP_IMAGE_BINARY:-}"
if [[ -z "${BINARY}" ]]; then
  log "building the release binary"
  (cd "${ROOT}" && cargo build --release --locked -p meshop --bin meshop)
  BINARY="${TARGET}/release/meshop"
fi

ROOTFS="${OUT}/rootfs"
rm -rf "${ROOTFS}"
mkdir -p "${ROOTFS}/usr/local/bin" "${ROOTFS}/etc" "${ROOTFS}/tmp"
chmod 1777 "${ROOTFS}/tmp"
install -m 0755 "${BINARY}" "${ROOTFS}/usr/local/bin/meshop"
strip --strip-unneeded "${ROOTFS}/usr/local/bin/meshop"
# Exactly the libraries the dynamic loader resolves for this binary (glibc's, when it is not
# static), at the paths it looks for them.
if ldd "${BINARY}" >/dev/null 2>&1; then
  ldd "${BINARY}" | awk '/=> \// {print $3} /^[[:space:]]*\/[^ ]+ \(/ {print $1}' | while read -r lib; do
    mkdir -p "${ROOTFS}$(dirname "${lib}")"
    cp -L "${lib}" "${ROOTFS}${lib}"
  done
fi
echo "root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin" > "${ROOTFS}/etc/passwd"
echo "root:x:0:
nonroot:x:65532:" > "${ROOTFS}/etc/group"

REVISION="$(git -C "${ROOT}" rev-parse HEAD 2>/dev/null || echo unknown)"
SOURCE="${MESHOP_IMAGE_SOURCE:-$(git -C "${ROOT}" remote get-url origin 2>/dev/null || echo unknown)}"
ARCHIVE="${OUT}/meshop-${VERSION}.oci.tar"
"${OCIBUILD}" -rootfs "${ROOTFS}" -layout "${OUT}/oci" -archive "${ARCHIVE}" -tag "meshop:${VERSION}" \
  -user 65532:65532 -entrypoint /usr/local/bin/meshop -cmd run \
  -port 8080/tcp -port 9443/tcp \
  -label "org.opencontainers.image.title=meshop" \
  -label "org.opencontainers.image.description=meshop installs and runs an Istio service mesh from one MeshInstall resource" \
  -label "org.opencontainers.image.version=${VERSION}" \
  -label "org.opencontainers.image.revision=${REVISION}" \
  -label "org.opencontainers.image.source=${SOURCE}" \
  -label "org.opencontainers.image.licenses=Apache-2.0" >&2
log "rootfs $(du -sh "${ROOTFS}" | cut -f1), archive $(du -h "${ARCHIVE}" | cut -f1): ${ARCHIVE}"
echo "${OUT}"
