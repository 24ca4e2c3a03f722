#!/usr/bin/env bash
# Build the liver-agent image (deploy/Dockerfile) with podman; prints the build time and size.
#
#   deploy/build-image.sh [TAG]          # default tag: liver-agent:<version in pyproject.toml>
#   deploy/build-image.sh --base-only    # only make sure the base image exists; print its name
#
# Base image: $LIVER_AGENT_BASE_IMAGE when set (e.g. docker.io/library/python:3.11-slim-bookworm
# where a registry is reachable); otherwise a Debian bookworm base bootstrapped here with
# debootstrap (needs root; done once, then podman keeps it as localhost/liver-agent-base).
#
# pip inside the build uses this machine's pip configuration (`pip config list`: index,
# extra indexes, find-links, constraints, CA bundle): local folders it names are mounted
# read-only into the build at the same paths, and the build runs on the host's network.
# Where a local wheel folder holds a CPU build of torch (a "+cpu" wheel), that one is installed;
# otherwise the CPU wheels of the versions in pyproject.toml from $TORCH_INDEX_URL.
#
# Podman runs with $PODMAN_FLAGS (default: --runtime runc --cgroup-manager cgroupfs: crun fails
# on hybrid cgroups) and, for RUN steps, $PODMAN_ULIMITS (default: nofile and nproc 4096: podman
# otherwise asks for limits above what a process without CAP_SYS_RESOURCE may set).
set -euo pipefail
cd "$(dirname "$0")/.."

read -r -a podman_flags <<<"${PODMAN_FLAGS:---runtime runc --cgroup-manager cgroupfs}"
read -r -a ulimits <<<"${PODMAN_ULIMITS:---ulimit nofile=4096:4096 --ulimit nproc=4096:4096}"
podman() { command podman "${podman_flags[@]}" "$@"; }

version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
base_only=false
if [ "${1:-}" = --base-only ]; then
  base_only=true
  shift
fi
tag=${1:-liver-agent:$version}
# the pip whose configuration counts: the project's venv (make setup), else python3's
python=${PYTHON:-python3}
[ -n "${PYTHON:-}" ] || [ ! -x .venv/bin/python ] || python=.venv/bin/python
started=$(date +%s)

# --- the base image -------------------------------------------------------------------------
base=${LIVER_AGENT_BASE_IMAGE:-}
if [ -z "$base" ]; then
  base=localhost/liver-agent-base:bookworm-python3
  if ! podman image exists "$base"; then
    command -v debootstrap >/dev/null || {
      echo "error: debootstrap missing (apt-get install debootstrap) and no LIVER_AGENT_BASE_IMAGE" >&2
      exit 1
    }
    # the Debian mirror this machine's apt uses (debootstrap's default where none is found)
    mirror=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' \
      | grep -v security | head -1 || true)
    [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' \
      /etc/apt/sources.list 2>/dev/null || true)
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    echo "bootstrapping $base (debootstrap bookworm${mirror:+ from $mirror}) ..."
    debootstrap --variant=minbase --include=python3-venv,ca-certificates bookworm "$root" \
      ${mirror:+"$mirror"} >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; exit 1; }
    rm -f "$root.log"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc \
      "$root"/usr/share/man "$root"/usr/share/locale/*
    tar -C "$root" -c . | podman import --change 'CMD ["/bin/bash"]' - "$base" >/dev/null
    rm -rf "$root"
    trap - EXIT
    echo "base image $base ready after $(($(date +%s) - started)) s"
  fi
fi
if $base_only; then
  echo "$base"
  exit 0
fi

# --- pip's configuration, as this machine's pip sees it -----------------------------------
build_args=(--build-arg "BASE_IMAGE=$base")
mounts=()
declare -A mounted=()
mount_local() { # mount every local path a pip option value names (file:// URLs, plain paths)
  local item path
  for item in $1; do
    path=${item#file://}
    [[ "$path" == /* && -e "$path" ]] || continue
    # a PEP 503 index ".../simple" links its files relatively (../../files/...): mount its root
    [ "$(basename "$path")" = simple ] && path=$(dirname "$path")
    [ -n "${mounted[$path]:-}" ] && continue
    mounted[$path]=1
    mounts+=(--volume "$path:$path:ro")
  done
}
declare -A pip_option=() from_env=()
while IFS= read -r line; do # lines like global.find-links='/opt/wheels' or :env:.find-links='...'
  key=${line%%=*}
  scope=${key%.*}
  key=${key##*.}
  value=${line#*=}
  value=${value#\'}
  value=${value%\'}
  case "$key" in
    index-url | extra-index-url | find-links | constraint | cert | no-index | trusted-host)
      # PIP_* environment variables win over the files, as they do for pip
      [ -n "${from_env[$key]:-}" ] && continue
      [ "$scope" = :env: ] && from_env[$key]=1
      pip_option[$key]=$value
      ;;
  esac
done < <("$python" -m pip config list 2>/dev/null || true)
for key in "${!pip_option[@]}"; do
  value=${pip_option[$key]}
  mount_local "$value"
  name=PIP_$(echo "$key" | tr 'a-z-' 'A-Z_')
  build_args+=(--build-arg "$name=$value")
done

# --- torch: a CPU build from a local wheel folder, if there is one ------------------------
torch_args=()
for folder in ${pip_option[find-links]:-}; do
  folder=${folder#file://}
  wheel=$(ls "$folder"/torch-*+cpu-cp311-*.whl 2>/dev/null | sort -V | tail -1 || true)
  [ -n "$wheel" ] || continue
  torch_version=$(basename "$wheel" | cut -d- -f2) # e.g. 2.13.0+cpu
  minor=$(echo "$torch_version" | cut -d. -f2)
  # torchvision 0.(N+15) goes with torch 2.N; torchvision's own wheel is not CUDA-bound
  torch_args=(--build-arg "TORCH_REQUIREMENTS=torch==$torch_version torchvision==0.$((minor + 15)).*"
    --build-arg "TORCH_INDEX_URL=")
  echo "torch: $torch_version from $folder"
  break
done

# --- build ------------------------------------------------------------------------------
build_started=$(date +%s)
podman build --format docker --network host "${ulimits[@]}" "${mounts[@]}" "${build_args[@]}" \
  "${torch_args[@]}" --ignorefile deploy/Dockerfile.dockerignore -f deploy/Dockerfile -t "$tag" .
finished=$(date +%s)
size=$(podman image inspect --format '{{.Size}}' "$tag")
echo "image $tag: $((size / 1000000)) MB; build $((finished - build_started)) s" \
  "(with the base image: $((finished - started)) s)"
