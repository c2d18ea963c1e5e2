#!/usr/bin/env bash
# Build the one facesr image (components/Dockerfile) with Docker or Podman, whichever works here, tagged
#   facesr:<facesr.__version__>  and  <params pipeline.image>   (e.g. ghcr.io/facesr/facesr:0.1.0)
#
#   scripts/build-image.sh                      # base image FACESR_BASE_IMAGE (default python:3.11-slim-bookworm)
#   scripts/build-image.sh --debootstrap        # offline: a Debian bookworm base made here with debootstrap
#   scripts/build-image.sh --weights weights    # + bake the pretrained files in ./weights (build arg WEIGHTS_DIR)
#
# Environment (all optional):
#   FACESR_ENGINE=docker|podman      the engine (default: docker when its daemon answers, else podman)
#   FACESR_BASE=image|debootstrap    where the base comes from (default image; --debootstrap = debootstrap)
#   FACESR_BASE_IMAGE=REF            base for both stages (default python:3.11-slim-bookworm; with debootstrap
#                                    localhost/facesr-base:bookworm, made once and reused)
#   FACESR_DEBIAN_MIRROR=URL         debootstrap's mirror (default: the first Debian URI in /etc/apt/sources.list*)
#   FACESR_PIP_CERT=FILE             CA bundle pip inside the build must trust (default: the host pip's `cert`,
#                                    $PIP_CERT, else none); sent as the build secret `pip_cert`, never stored in a layer
#   FACESR_PIP_INDEX_URL=URL         package index for the build (default: the host pip's index-url, else PyPI)
#   FACESR_CONTAINERS_CONF=FILE      Podman only: containers.conf (default components/containers.conf; empty: the
#                                    system's); an exported CONTAINERS_CONF wins
#   FACESR_IMAGE=REF                 the image to build (default: params pipeline.image); facesr:VERSION is added
#   FACESR_PYTHON=PATH               the python that runs facesr here (default .venv/bin/python)
# Extra arguments after `--` go to `<engine> build` unchanged. Exit status: 0 built, 2 bad usage, 1 build failed.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
die() { echo "build-image: $1" >&2; exit "${2:-1}"; }

base_mode=${FACESR_BASE:-image}
weights=""
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --debootstrap) base_mode=debootstrap ;;
    --weights) [ $# -ge 2 ] || usage; weights=$2; shift ;;
    --weights=*) weights=${1#*=} ;;
    -h|--help) usage ;;
    --) shift; extra=("$@"); break ;;
    *) echo "build-image: unknown argument $1" >&2; usage ;;
  esac
  shift
done
case "$base_mode" in image|debootstrap) ;; *) die "FACESR_BASE=$base_mode: use 'image' or 'debootstrap'" 2 ;; esac
if [ -n "$weights" ] && [ ! -d "$weights" ]; then die "--weights $weights: no such folder" 2; fi

py=${FACESR_PYTHON:-.venv/bin/python}
[ -x "$py" ] || die "$py not found: run scripts/setup.sh first (or set FACESR_PYTHON)" 2
version=$("$py" -c 'import facesr; print(facesr.__version__)')
image=${FACESR_IMAGE:-$("$py" -c 'from facesr.cli.main import entrypoint; entrypoint()' params --flat \
                         | sed -n 's/^pipeline\.image=//p')}
[ -n "$image" ] || die "no pipeline.image in params.yaml (\`facesr params --flat\`); set FACESR_IMAGE" 2
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain -- src pyproject.toml requirements.lock params.yaml 2>/dev/null)" ]; then
  commit="$commit-dirty"
fi

# ---------------------------------------------------------------------------------------------------- the engine
engine=${FACESR_ENGINE:-}
if [ -z "$engine" ]; then
  if command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; then
    engine=docker
  elif command -v podman >/dev/null 2>&1; then
    engine=podman
  else
    die "neither a Docker daemon nor Podman here: install Podman (Debian/Ubuntu: apt-get install -y podman buildah runc) or start Docker" 2
  fi
fi
case "$engine" in docker|podman) ;; *) die "FACESR_ENGINE=$engine: use docker or podman" 2 ;; esac
engine_args=()
if [ "$engine" = podman ]; then
  if [ -z "${CONTAINERS_CONF:-}" ] && [ -n "${FACESR_CONTAINERS_CONF-components/containers.conf}" ]; then
    CONTAINERS_CONF=$(realpath "${FACESR_CONTAINERS_CONF:-components/containers.conf}")
    export CONTAINERS_CONF
  fi
  # buildah reads <Dockerfile>.dockerignore only when told; the host network reaches the package index
  engine_args+=(--ignorefile components/Dockerfile.dockerignore --network host --layers)
else
  export DOCKER_BUILDKIT=1  # secrets and <Dockerfile>.dockerignore need BuildKit
fi
image_exists() { "$engine" image inspect "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------------------------------------------- the base
base=${FACESR_BASE_IMAGE:-}
if [ "$base_mode" = debootstrap ]; then
  base=${base:-localhost/facesr-base:bookworm}
  if image_exists "$base"; then
    echo "build-image: base $base exists (remove it to make a fresh one)" >&2
  else
    command -v debootstrap >/dev/null 2>&1 || die "debootstrap not found: apt-get install -y debootstrap" 2
    [ "$(id -u)" = 0 ] || die "debootstrap needs root (or build once where it can run, then reuse the base image)" 2
    mirror=${FACESR_DEBIAN_MIRROR:-$( (cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        /etc/apt/sources.list.d/*.sources 2>/dev/null || true) \
      | grep -oE '(https?|file)://[^ ]*/debian/?( |$)' | tr -d ' ' | head -n1 || true)}
    [ -n "$mirror" ] || die "no Debian mirror in /etc/apt/sources.list*: set FACESR_DEBIAN_MIRROR" 2
    cache=${XDG_CACHE_HOME:-$HOME/.cache}/facesr
    rootfs=$cache/rootfs-bookworm.$$
    mkdir -p "$cache"
    trap 'rm -rf "$rootfs"' EXIT
    echo "build-image: debootstrap bookworm from $mirror (about a minute)..." >&2
    t0=$SECONDS
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" "$mirror" \
      > "$cache/debootstrap.log" 2>&1 || die "debootstrap failed: see $cache/debootstrap.log"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | "$engine" import --change 'CMD ["/bin/bash"]' - "$base" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
    echo "build-image: base $base made in $((SECONDS - t0)) s" >&2
  fi
fi

# ---------------------------------------------------------------------------------------------------- pip's trust
host_pip() { "$py" -m pip config get "$1" 2>/dev/null | tail -n1 || true; }
cert=${FACESR_PIP_CERT-${PIP_CERT:-$(host_pip global.cert)}}
index=${FACESR_PIP_INDEX_URL-${PIP_INDEX_URL:-$(host_pip global.index-url)}}
build_args=(--build-arg "FACESR_VERSION=$version" --build-arg "GIT_COMMIT=$commit")
# no FACESR_BASE_IMAGE: the Dockerfile's own default (ARG PYTHON_IMAGE, python:3.11-slim-bookworm)
[ -n "$base" ] && build_args+=(--build-arg "PYTHON_IMAGE=$base")
[ -n "$index" ] && build_args+=(--build-arg "PIP_INDEX=$index")
[ -n "$weights" ] && build_args+=(--build-arg "WEIGHTS_DIR=$weights")
if [ -n "$cert" ]; then
  [ -r "$cert" ] || die "pip CA bundle $cert is not readable (FACESR_PIP_CERT)" 2
  build_args+=(--secret "id=pip_cert,src=$cert")
fi

local_tag=facesr:$version
echo "build-image: $engine build, base ${base:-of the Dockerfile} -> $image and $local_tag (commit $commit)" >&2
t0=$SECONDS
"$engine" build "${engine_args[@]}" -f components/Dockerfile "${build_args[@]}" \
  -t "$image" -t "$local_tag" "${extra[@]}" . || die "$engine build failed (exit $?)"
secs=$((SECONDS - t0))
size=$("$engine" image inspect --format '{{.Size}}' "$image")
echo "build-image: built $image ($local_tag) in $secs s; size $((size / 1000000)) MB ($engine)"
