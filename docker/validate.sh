#!/usr/bin/env bash
# Checks Larch's container files without building an image or needing a Docker engine:
# hadolint over the Dockerfiles, shellcheck over the scripts, Docker Compose's own parser over
# compose.yaml, and the rules in docker/validate.py (identical runtime stages, single EXPOSE
# ports, non-root, read-only root filesystem, API key from a secret). Part of tests/run.
#
# The tools come from PyPI (docker/requirements.txt) into the virtualenv .venv-docker
# (LARCH_DOCKER_VENV to choose another); needs python3 with venv. Runs every check, prints
# each, and exits 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

venv="${LARCH_DOCKER_VENV:-.venv-docker}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" || exit 1
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r docker/requirements.txt || exit 1
tools="$venv/bin"

passed=0
failed=0
# check DESCRIPTION COMMAND...: runs the command, counts and reports the outcome.
check() {
    local what="$1"
    shift
    echo "docker/validate: $what"
    if "$@"; then
        passed=$((passed + 1))
    else
        echo "docker/validate: FAILED: $what" >&2
        failed=$((failed + 1))
    fi
}
compose_rules() {
    "$tools/docker-compose" -f docker/compose.yaml config --format json \
        | "$tools/python" docker/validate.py compose docker/Dockerfile
}

check "$("$tools/hadolint" --version): docker/Dockerfile docker/Dockerfile.prebuilt" \
    "$tools/hadolint" docker/Dockerfile docker/Dockerfile.prebuilt
check "$("$tools/shellcheck" --version | sed -n 's/^version: /shellcheck /p'): docker/*.sh" \
    "$tools/shellcheck" docker/build-image.sh docker/validate.sh
check "Dockerfile rules (docker/validate.py)" \
    "$tools/python" docker/validate.py dockerfiles docker/Dockerfile docker/Dockerfile.prebuilt
check "$("$tools/docker-compose" version --short | sed 's/^/Docker Compose /'): config -q docker/compose.yaml" \
    "$tools/docker-compose" -f docker/compose.yaml config -q
check "compose.yaml rules (docker/validate.py)" compose_rules

echo "docker/validate: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
