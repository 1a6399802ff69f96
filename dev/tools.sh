#!/usr/bin/env bash
# Builds the pinned Go tools the chart checks need -- helm and promtool -- into a cache
# directory that survives between runs, so `make chart-test` only compiles them once.
#
#   dev/tools.sh            build what is missing, print the bin directory
#   SYNCD_TOOLS_DIR=...     override the cache (default: ~/.cache/syncd-tools)
#
# GOPATH/GOCACHE are left at Go's defaults on purpose: the module cache (~/go/pkg/mod) and the
# build cache (~/.cache/go-build) are then shared with every other Go build on the machine.
# Each binary is rebuilt only when its pinned version changes (a stamp file records it).
set -euo pipefail

HELM_VERSION="v3.22.0"
# Kubernetes minor version of the client libraries helm v3.22.0 builds with (k8s.io/client-go
# v0.37): the default for `helm template` without --kube-version, as in helm's own release build.
HELM_K8S_MINOR="37"
# Bump when the build recipe below changes, so cached binaries are rebuilt.
RECIPE="2"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${SYNCD_TOOLS_DIR:-${HOME}/.cache/syncd-tools}"
BIN="${TOOLS_DIR}/bin"
mkdir -p "${BIN}"

# Never let `go` download another toolchain: only the registries' modules are reachable.
export GOTOOLCHAIN=local
export CGO_ENABLED=0

log() { printf 'tools.sh: %s\n' "$*" >&2; }

fresh() { # fresh NAME STAMP -> true when BIN/NAME exists and was built from STAMP
    [[ -x "${BIN}/$1" && -f "${BIN}/$1.version" && "$(cat "${BIN}/$1.version")" == "$2" ]]
}

if ! fresh helm "${HELM_VERSION}+${RECIPE}"; then
    log "building helm ${HELM_VERSION} (first run only)"
    GOBIN="${BIN}" go install -ldflags "-s -w \
        -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION} \
        -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
        -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${HELM_K8S_MINOR} \
        -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 \
        -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${HELM_K8S_MINOR}" \
        "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
    echo "${HELM_VERSION}+${RECIPE}" > "${BIN}/helm.version"
fi

# promtool: version pinned by tools/go.mod (+ go.sum); the stamp is that file's prometheus line.
PROM_STAMP="$(grep -E '^require github.com/prometheus/prometheus ' "${ROOT}/tools/go.mod" \
    | awk '{print $3}')"
if [[ -z "${PROM_STAMP}" ]]; then
    log "tools/go.mod does not pin github.com/prometheus/prometheus"; exit 1
fi
if ! fresh promtool "${PROM_STAMP}+${RECIPE}"; then
    log "building promtool ${PROM_STAMP} (first run only; several minutes on 2 cores)"
    # remove_all_sd: promtool's rule checks need no service-discovery plugins; leaving them
    # out roughly halves the compile.
    (cd "${ROOT}/tools" && go build -mod=readonly -tags remove_all_sd \
        -ldflags "-s -w -X github.com/prometheus/common/version.Version=${PROM_STAMP#v}" \
        -o "${BIN}/promtool" github.com/prometheus/prometheus/cmd/promtool)
    echo "${PROM_STAMP}+${RECIPE}" > "${BIN}/promtool.version"
fi

echo "${BIN}"
