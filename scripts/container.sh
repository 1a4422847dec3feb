#!/usr/bin/env bash
# The CPU container image of the bento, built and run with podman on a Debian base made here
# from Debian's mirror (no registry needed); see docs/container.md.
#   scripts/container.sh [IMAGE]        # default ferops:cpu; prints the image name
# Packs the BentoML store's ferops-resnet18:latest (`ferops-models import-bento` first).
# The GPU image is `bentoml containerize` of the plain bento (bentofile.yaml: CUDA base), on a
# host that can pull nvidia/cuda.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${1:-ferops:cpu}
PYTHON=${PYTHON:-.venv/bin/python}
BIN=$(dirname "$PYTHON")
BASE=${FEROPS_BASE_IMAGE:-localhost/ferops-base:bookworm}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/scripts/containers.conf}

need=()
for tool in podman runc mmdebstrap; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "container: missing ${need[*]}: run \`sudo apt-get install ${need[*]}\`" >&2
    exit 1
  fi
  echo "container: installing Debian's ${need[*]}" >&2
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >&2
fi

# The base: Debian 12 minbase with its Python 3.11, pip (BentoML's Dockerfile installs uv with
# it, then makes its own venv), CA certificates and libgomp1 (onnxruntime's OpenMP). The local
# CAs this machine trusts (/usr/local/share/ca-certificates, e.g. an egress proxy's) are added
# the Debian way, and pip and uv are pointed at the system bundle (pip's own certifi and uv's
# built-in roots do not read it), so the build reaches PyPI from wherever this host does.
if ! podman image exists "$BASE"; then
  echo "container: making the base $BASE from Debian's mirror (about 2 minutes)" >&2
  bundle=/etc/ssl/certs/ca-certificates.crt
  mmdebstrap --quiet --variant=minbase \
    --include=python3,python3-pip,ca-certificates,libgomp1 \
    --customize-hook='for crt in /usr/local/share/ca-certificates/*.crt; do
        [ -f "$crt" ] && cp "$crt" "$1/usr/local/share/ca-certificates/"; done;
        chroot "$1" update-ca-certificates' \
    bookworm - |
    podman import --change 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' --change "ENV PIP_CERT=$bundle" \
      --change "ENV SSL_CERT_FILE=$bundle" --change 'CMD ["/bin/bash"]' - "$BASE" >&2
fi

# A bento whose Dockerfile starts FROM that base: bentofile.yaml with its docker section
# replaced (BentoML ignores distro, python_version, cuda_version and system_packages once
# base_image is set; the base carries what they would add).
cpu_bentofile=$(mktemp --suffix=.yaml)
trap 'rm -f "$cpu_bentofile"' EXIT
"$PYTHON" - "$cpu_bentofile" "$BASE" <<'PY'
import sys
import yaml
config = yaml.safe_load(open("bentofile.yaml"))
config["docker"] = {"base_image": sys.argv[2]}
config.setdefault("labels", {})["image"] = "cpu"
yaml.safe_dump(config, open(sys.argv[1], "w"), sort_keys=False)
PY
tag=$(PYTHON="$PYTHON" scripts/build_bento.sh -f "$cpu_bentofile")
echo "container: bento $tag → image $IMAGE" >&2
"$BIN/bentoml" containerize "$tag" --backend podman -t "$IMAGE" >&2
echo "$IMAGE"
