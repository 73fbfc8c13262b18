#!/usr/bin/env bash
# Builds the flash-host container image with buildah: FROM scratch, nothing pulled.
#
#   scripts/build-image.sh [cpu|gpu] [--tag NAME] [--rootfs DIR] [--check] [--prereqs]
#
#   cpu (default)  image/Containerfile: a static x86_64-unknown-linux-musl flash-host
#                  (release), CA certificates, /app and /root/.runpod. No wasi:nn models.
#   gpu            image/Containerfile.gpu: a glibc flash-host with ONNX Runtime 1.22 + CUDA
#                  12.8 + cuDNN 9 from the pinned PyPI wheels of image/gpu-requirements.txt
#                  (1.9 GB, downloaded once into $FLASH_IMAGE_WORK_DIR/wheels-*), and the
#                  C/C++ runtime they need, copied from this machine (image/rootfs.py).
#   --tag NAME     image name [default: ghcr.io/flash-rs/flash-host:<version>-<variant>, the
#                  name endpoint templates use; FLASH_HOST_IMAGE_REPO replaces the repository]
#   --rootfs DIR   then copy the image's root filesystem into DIR (new or empty), without
#                  running it (buildah from + mount; under `buildah unshare` when not root)
#   --check        then check that root filesystem (image/rootfs.py check; in a temporary
#                  directory without --rootfs): cpu: the entrypoint is static; gpu: every
#                  shared library resolves inside the image, and the image's own loader runs
#                  its flash-host with the image's libraries only
#   --prereqs      only install what building needs, then exit (scripts/test.sh uses it)
#
# Needs rustup and cargo, python3, strip (binutils) and buildah; cpu: the musl target and
# musl-gcc (ring compiles C); gpu: pip. Missing pieces are installed (rustup target add;
# apt-get for buildah, musl-tools, binutils, ca-certificates when running as root), else the
# script says what to install; FLASH_IMAGE_NO_INSTALL=1 installs nothing (the test suite).
# Build contexts and wheels go to FLASH_IMAGE_WORK_DIR (default $CARGO_TARGET_DIR/image). Cached: cargo's target dir (CARGO_TARGET_DIR, default
# ./target) and the wheels; layers are reproducible (--timestamp 0), so an unchanged build
# makes the same image. Publishing is `buildah push` (README, "Container image").
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "error: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }

variant=cpu tag="" rootfs="" check=0 prereqs_only=0
while [ $# -gt 0 ]; do
    case "$1" in
        cpu|gpu) variant="$1" ;;
        --tag) [ $# -ge 2 ] || die "--tag needs a name"; tag="$2"; shift ;;
        --tag=*) tag="${1#--tag=}" ;;
        --rootfs) [ $# -ge 2 ] || die "--rootfs needs a directory"; rootfs="$2"; shift ;;
        --rootfs=*) rootfs="${1#--rootfs=}" ;;
        --check) check=1 ;;
        --prereqs) prereqs_only=1 ;;
        -h|--help) usage 0 ;;
        *) echo "error: unknown argument \`$1\`" >&2; usage 2 ;;
    esac
    shift
done

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)"
[ -n "$version" ] || die "no workspace version in Cargo.toml"
tag="${tag:-${FLASH_HOST_IMAGE_REPO:-ghcr.io/flash-rs/flash-host}:$version-$variant}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
work="${FLASH_IMAGE_WORK_DIR:-$CARGO_TARGET_DIR/image}"
musl=x86_64-unknown-linux-musl

# --- prerequisites ---------------------------------------------------------------------------

# install_debian WHY PACKAGE...: installs Debian packages when root (and allowed), else says
# what to run.
install_debian() {
    local why="$1"; shift
    if [ "${FLASH_IMAGE_NO_INSTALL:-}" != 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "==> installing $* (Debian packages; $why)"
        export DEBIAN_FRONTEND=noninteractive
        if ! apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1; then
            apt-get update -qq >/dev/null || die "apt-get update failed: install $* ($why)"
            apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
                || die "apt-get install $* failed: install it yourself ($why)"
        fi
    else
        die "$why: install $* (Debian/Ubuntu: sudo apt-get install $*; Fedora: sudo dnf install $*)"
    fi
}

prereqs() {
    command -v cargo >/dev/null 2>&1 || die "cargo is not installed (https://rustup.rs)"
    command -v python3 >/dev/null 2>&1 || die "python3 is not installed"
    command -v buildah >/dev/null 2>&1 || install_debian "buildah builds the image" buildah
    command -v strip >/dev/null 2>&1 || install_debian "strip drops flash-host's debug info" binutils
    [ -s /etc/ssl/certs/ca-certificates.crt ] \
        || install_debian "the image carries /etc/ssl/certs/ca-certificates.crt" ca-certificates
    if [ "$variant" = cpu ]; then
        if ! rustup target list --installed 2>/dev/null | grep -qx "$musl"; then
            command -v rustup >/dev/null 2>&1 \
                || die "the Rust target $musl is missing and rustup is not installed to add it"
            [ "${FLASH_IMAGE_NO_INSTALL:-}" != 1 ] \
                || die "the Rust target $musl is missing: rustup target add $musl"
            echo "==> rustup target add $musl (the static flash-host of the CPU image)"
            rustup target add "$musl" >/dev/null || die "rustup target add $musl failed"
        fi
        # ring (rustls) compiles C for the target; the cc crate uses musl-gcc for musl.
        command -v musl-gcc >/dev/null 2>&1 \
            || install_debian "musl-gcc compiles ring's C code for $musl" musl-tools
    else
        python3 -m pip --version >/dev/null 2>&1 \
            || die "pip is not available for python3 (Debian: sudo apt-get install python3-pip)"
    fi
}

prereqs
[ "$prereqs_only" = 0 ] || exit 0

mkdir -p "$work/$variant"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$work/$variant.lock"
    flock 9
fi

# --- build context ---------------------------------------------------------------------------

ctx="$work/$variant/context"
rm -rf "$ctx"
mkdir -p "$ctx"
if [ "$variant" = cpu ]; then
    echo "==> cargo build --release -p flash-host --target $musl"
    cargo build --release --locked -p flash-host --target "$musl"
    bin="$CARGO_TARGET_DIR/$musl/release/flash-host"
else
    echo "==> cargo build --release -p flash-host"
    cargo build --release --locked -p flash-host
    bin="$CARGO_TARGET_DIR/release/flash-host"
fi
# Symbols stay (panics and backtraces keep function names); line tables go (~120 MB).
strip --strip-debug -o "$ctx/flash-host" "$bin"
python3 image/rootfs.py base "$ctx/base" --certs /etc/ssl/certs/ca-certificates.crt

if [ "$variant" = gpu ]; then
    requirements=image/gpu-requirements.txt
    wheels="$work/wheels-$(sha256sum "$requirements" | cut -c1-12)"
    echo "==> pip download -r $requirements (into $wheels)"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
        --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64 \
        -r "$requirements" -d "$wheels"
    echo "==> ONNX Runtime, CUDA and the glibc runtime (image/rootfs.py gpu-libs)"
    python3 image/rootfs.py gpu-libs "$ctx" --wheels "$wheels" --flash-host "$ctx/flash-host"
    containerfile=image/Containerfile.gpu
else
    containerfile=image/Containerfile
fi

# --- image -----------------------------------------------------------------------------------

old_id="$(buildah images --noheading --quiet "$tag" 2>/dev/null | head -n1 || true)"
echo "==> buildah bud -f $containerfile -t $tag"
buildah bud --quiet --layers --timestamp 0 -f "$containerfile" -t "$tag" "$ctx" >/dev/null
new_id="$(buildah images --noheading --quiet "$tag" | head -n1)"
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
    buildah rmi "$old_id" >/dev/null 2>&1 || true # the previous build of this tag, if unused
fi
size="$(buildah images --noheading --format '{{.Size}}' "$tag" | head -n1)"
echo "==> built $tag (image $new_id, $size)"

# --- root filesystem -------------------------------------------------------------------------

if [ "$check" = 1 ] && [ -z "$rootfs" ]; then
    rootfs="$(mktemp -d)"
    trap 'rm -rf "$rootfs"' EXIT
fi
if [ -n "$rootfs" ]; then
    if [ -e "$rootfs" ] && [ -n "$(ls -A "$rootfs")" ]; then
        die "--rootfs $rootfs is not empty"
    fi
    mkdir -p "$rootfs"
    rootfs="$(cd "$rootfs" && pwd)"
    # shellcheck disable=SC2016 # expanded by the inner shell
    copy='c=$(buildah from --quiet "$1") || exit 1
        m=$(buildah mount "$c") && cp -a "$m"/. "$2"/; s=$?
        buildah umount "$c" >/dev/null; buildah rm "$c" >/dev/null; exit $s'
    if [ "$(id -u)" = 0 ]; then
        sh -c "$copy" sh "$tag" "$rootfs"
    else
        buildah unshare sh -c "$copy" sh "$tag" "$rootfs"
    fi
    echo "==> root filesystem of $tag in $rootfs"
fi
if [ "$check" = 1 ]; then
    echo "==> checking it (image/rootfs.py check)"
    buildah inspect --type image "$tag" | python3 image/rootfs.py check "$rootfs" --variant "$variant"
fi
