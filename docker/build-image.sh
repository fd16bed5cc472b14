#!/usr/bin/env bash
# Builds Larch's container image without a Docker engine: a static musl `larch` built on this
# machine, packed by buildah into the same FROM-scratch runtime stage as docker/Dockerfile
# (docker/Dockerfile.prebuilt). Needs the Rust toolchain with rustup, buildah and musl-gcc
# (Debian: `apt-get install buildah musl-tools`); runs as root or with rootless buildah set up.
#
#   docker/build-image.sh                  # image localhost/larch:<version> and :latest
#   docker/build-image.sh --multi-stage    # docker/Dockerfile itself (needs the `rust` image
#                                          # from Docker Hub, or a local image of that name)
#
# Environment:
#   IMAGE             image name (default localhost/larch)
#   STORAGE_DRIVER    buildah storage driver (default vfs: works without overlayfs, e.g. in a
#                     container; pass the same --storage-driver to later buildah commands)
#   CARGO_TARGET_DIR  where cargo builds (default target/; a separate dir keeps a shared
#                     target/ untouched)
#   IMAGE_ARCHIVE     also write the image to this docker-archive tarball (`docker load -i`)
#   LIBC              musl (default) or gnu (glibc linked statically; the fallback when rustup
#                     cannot add the musl target)
#
# Not run by CI (a release build takes several minutes); docker/validate.sh lints the files.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=prebuilt
case "${1:-}" in
    "") ;;
    --multi-stage) mode=multi-stage ;;
    *) echo "usage: $0 [--multi-stage]" >&2; exit 64 ;;
esac

image="${IMAGE:-localhost/larch}"
storage="${STORAGE_DRIVER:-vfs}"
buildah=(buildah --storage-driver "$storage")

if ! command -v buildah >/dev/null 2>&1; then
    echo "build-image: buildah not found (Debian/Ubuntu: apt-get install buildah)" >&2
    exit 1
fi

if [ "$mode" = multi-stage ]; then
    echo "build-image: buildah bud -f docker/Dockerfile (builder stage compiles larch)"
    "${buildah[@]}" bud --isolation chroot --layers \
        -f docker/Dockerfile --ignorefile docker/Dockerfile.dockerignore \
        -t "$image:latest" .
    "${buildah[@]}" images "$image"
    exit 0
fi

# 1. The static binary. musl: no libc or NSS to look up at run time, so it runs in FROM
# scratch. Where rustup cannot fetch the musl target (or with LIBC=gnu), glibc linked statically
# is the fallback, with a catch: glibc resolves host names through NSS modules that a scratch
# image lacks. `larch serve` resolves none (it binds addresses), but anything in the container
# that dials a name (`larch keys --addr http://NAME:5080`, split mode's data plane reaching the
# control plane by its Service name) fails there; use musl for those.
arch="$(uname -m)"
if [ "${LIBC:-musl}" = musl ] && rustup target add "$arch-unknown-linux-musl"; then
    target="$arch-unknown-linux-musl"
    # C and assembly inside dependencies (ring, for TLS) need a C compiler for musl.
    if ! command -v musl-gcc >/dev/null 2>&1; then
        echo "build-image: musl-gcc not found (Debian/Ubuntu: apt-get install musl-tools)" >&2
        exit 1
    fi
else
    echo "build-image: no musl target; building a static glibc binary instead" >&2
    target="$arch-unknown-linux-gnu"
    # With --target, RUSTFLAGS reach only the target's crates, not build scripts.
    export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static"
fi
target_dir="${CARGO_TARGET_DIR:-target}"
echo "build-image: cargo build --release --target $target (into $target_dir)"
cargo build --release --locked --package larch --target "$target" --target-dir "$target_dir"
bin="$target_dir/$target/release/larch"

# A dynamic binary would fail in the image with a bare "no such file or directory".
if ldd "$bin" 2>&1 | grep -q '=>'; then
    echo "build-image: $bin is dynamically linked:" >&2
    ldd "$bin" >&2
    exit 1
fi
version="$("$bin" --version | awk '{print $2}')"
echo "build-image: $("$bin" --version), $(du -h "$bin" | cut -f1), statically linked"

# 2. The image, from a context holding only the binary and the empty data dir.
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp "$bin" "$context/larch"
mkdir "$context/data"
"${buildah[@]}" bud --isolation chroot \
    -f docker/Dockerfile.prebuilt -t "$image:$version" -t "$image:latest" "$context"

"${buildah[@]}" images "$image"
"${buildah[@]}" inspect --type image \
    --format 'user={{.OCIv1.Config.User}} entrypoint={{.OCIv1.Config.Entrypoint}} cmd={{.OCIv1.Config.Cmd}} ports={{len .OCIv1.Config.ExposedPorts}} volumes={{.OCIv1.Config.Volumes}}' \
    "$image:latest"
echo

if [ -n "${IMAGE_ARCHIVE:-}" ]; then
    rm -f "$IMAGE_ARCHIVE"
    "${buildah[@]}" push "$image:latest" "docker-archive:$IMAGE_ARCHIVE:$image:latest"
    echo "build-image: wrote $IMAGE_ARCHIVE ($(du -h "$IMAGE_ARCHIVE" | cut -f1)); load it with: docker load -i $IMAGE_ARCHIVE"
fi
