#!/usr/bin/env bash
# Docker engine, Compose v2 (and v1), a local registry on 127.0.0.1:5000, OpenSSH server/client and
# debootstrap: everything the deploy tests (tests/deploy) need, installed and started.
# Idempotent: a second run finds everything in place and only checks it still answers.
# Why the steps look like this: Debian 12 has only Compose v1, so the v2 plugin (a static binary)
# comes from Debian 13's docker-compose package; and no image can be pulled from a hub here.
set -euo pipefail

state=/var/lib/mcp-trader-ci
mkdir -p "${state}"

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
[[ -x /usr/sbin/sshd ]] || need+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v flock >/dev/null 2>&1 || need+=(util-linux)
command -v curl >/dev/null 2>&1 || need+=(curl)
# Compose v1 (Debian 12's docker-compose 1.29): the deploy script's fallback is tested too.
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
# Debian's python3 (bookworm's 3.11): the interpreter of the gateway test image's venv.
[[ -x /usr/bin/python3 ]] || need+=(python3)
# strip (binutils): the test images carry the provider binary without its debug info.
command -v strip >/dev/null 2>&1 || need+=(binutils)
if ((${#need[@]})); then
  apt-get update
  # No init system here: keep package scripts from trying to start the daemons themselves
  # (this script starts them below). A policy the machine already has is left as it is.
  own_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
  if ((own_policy)); then rm -f /usr/sbin/policy-rc.d; fi
fi

# Compose v2 CLI plugin from Debian 13 (trixie). A private apt state keeps trixie out of the
# system's sources: only this one .deb is fetched, nothing else is upgraded.
plugin=/usr/local/lib/docker/cli-plugins/docker-compose
if ! docker compose version >/dev/null 2>&1; then
  apt_dir="${state}/apt-trixie"
  mkdir -p "${apt_dir}/lists/partial" "${apt_dir}/archives/partial"
  cat >"${apt_dir}/sources.list" <<'LIST'
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
LIST
  apt_opts=(-o "Dir::Etc::SourceList=${apt_dir}/sources.list" -o "Dir::Etc::SourceParts=-"
    -o "Dir::State::Lists=${apt_dir}/lists" -o "Dir::Cache::Archives=${apt_dir}/archives"
    -o "APT::Architecture=amd64")
  apt-get "${apt_opts[@]}" update
  work="$(mktemp -d)"
  (cd "${work}" && apt-get "${apt_opts[@]}" download docker-compose)
  dpkg -x "${work}"/docker-compose_*.deb "${work}/x"
  install -D -m 0755 "${work}/x/usr/libexec/docker/cli-plugins/docker-compose" "${plugin}"
  rm -rf "${work}"
fi
docker compose version

# The Docker daemon, detached from this shell so it outlives .ci/run's setup step.
if ! docker info >/dev/null 2>&1; then
  setsid nohup dockerd >/var/log/dockerd.log 2>&1 </dev/null &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /var/log/dockerd.log" >&2; tail -n 30 /var/log/dockerd.log >&2; exit 1; }
fi
docker info --format 'docker {{.ServerVersion}}, storage {{.Driver}}'

# The registry the tests push to and the deploy script pulls from. Docker trusts 127.0.0.1
# over plain HTTP without an insecure-registry setting.
if ! curl -fsS http://127.0.0.1:5000/v2/ >/dev/null 2>&1; then
  mkdir -p "${state}/registry"
  cat >"${state}/registry.yml" <<CONF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: ${state}/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
CONF
  setsid nohup docker-registry serve "${state}/registry.yml" >/var/log/docker-registry.log 2>&1 </dev/null &
  for _ in $(seq 1 30); do
    curl -fsS http://127.0.0.1:5000/v2/ >/dev/null 2>&1 && break
    sleep 1
  done
  curl -fsS http://127.0.0.1:5000/v2/ >/dev/null || { echo "registry did not start; see /var/log/docker-registry.log" >&2; exit 1; }
fi
echo "registry: http://127.0.0.1:5000 answers"

# sshd is started per test run by the fixtures (own config, port and keys); it needs this dir.
mkdir -p /run/sshd
