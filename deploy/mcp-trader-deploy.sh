#!/usr/bin/env bash
# mcp-trader-deploy.sh: deploy, roll back and inspect the mcp-trader Compose stack on this server.
#
# Runs ON the server, normally shipped and started over SSH by `dagger call deploy|rollback|status`.
# The deploy directory (default: the parent of this script's directory) holds:
#   compose.yml             the stack (shipped with every deploy)
#   deploy/providers.yaml   the gateway's providers (shipped with every deploy)
#   deploy/mcp-trader-deploy.sh  this script (shipped with every deploy)
#   .env                    the server's settings and secrets; this script only ever rewrites the
#                           BINANCE_IMAGE_TAG and GATEWAY_IMAGE_TAG lines (atomically)
#   deployments.log         one JSON line per deploy/rollback attempt
#   deploy.lock             flock target; holds who is deploying right now
#
# Usage:
#   mcp-trader-deploy.sh [GLOBAL OPTIONS] deploy [--tag T] [--provider-tag T] [--gateway-tag T]
#   mcp-trader-deploy.sh [GLOBAL OPTIONS] rollback (--previous | --to TAG)
#   mcp-trader-deploy.sh [GLOBAL OPTIONS] status
# Global options:
#   --dir DIR             deploy directory (env MCP_TRADER_DIR)
#   --staged DIR          a freshly shipped bundle (compose.yml + deploy/); deploy and rollback
#                         install it into --dir under the lock; the bundle is removed at exit
#   --wait-timeout SECS   how long a new version may take to become healthy (env DEPLOY_WAIT_TIMEOUT, 120)
#   --keep N              keep the images of the last N deployments, prune older ones (env DEPLOY_KEEP, 5)
#   --registry-user USER  log in to the images' registry first; the token is read from stdin
# Deploy tags also come from env DEPLOY_TAG, DEPLOY_PROVIDER_TAG, DEPLOY_GATEWAY_TAG. A service
# without a requested tag keeps the tag pinned in .env.
#
# Exit codes: 0 done; 1 bad usage or input (nothing touched); 2 another deploy holds the lock;
# 3 pull failed (nothing changed); 4 new version unhealthy, previous version restored and healthy;
# 5 new version unhealthy and the previous version could not be restored either; 6 status: not all healthy.
set -euo pipefail

readonly PROVIDER_SERVICE=binance-provider
readonly GATEWAY_SERVICE=mcp-gateway
readonly PROVIDER_VAR=BINANCE_IMAGE_TAG
readonly GATEWAY_VAR=GATEWAY_IMAGE_TAG
# Docker's tag grammar: what a registry accepts, so nothing else can reach .env or a command.
readonly TAG_RE='^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$'

log() { printf '[mcp-trader-deploy] %s\n' "$*" >&2; }
die() {
  local code=$1
  shift
  log "error: $*"
  exit "${code}"
}
usage() {
  sed -n '/^# Usage:/,/^# Exit codes/p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 1
}

now_iso() { date -u +%Y-%m-%dT%H:%M:%SZ; }
now_s() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now_s)" 'BEGIN { printf "%.3f", b - a }'; }

valid_tag() { [[ $1 =~ ${TAG_RE} ]]; }
need_tag() { valid_tag "$2" || die 1 "$1 '$2' is not a valid image tag (letters, digits, '_', '.', '-'; at most 128; not starting with '.' or '-')"; }
need_uint() {
  if [[ ! $2 =~ ^[0-9]{1,6}$ ]] || ((10#$2 == 0)); then
    die 1 "$1 '$2' must be a positive whole number"
  fi
}

# ---------------------------------------------------------------------------------------------
# Arguments: everything is validated here, before the lock, a pull or any file is touched.
dir="${MCP_TRADER_DIR:-}"
staged=""
wait_timeout="${DEPLOY_WAIT_TIMEOUT:-120}"
keep="${DEPLOY_KEEP:-5}"
registry_user=""
while (($#)); do
  case $1 in
    --dir) dir=${2:?--dir needs a value}; shift 2 ;;
    --staged) staged=${2:?--staged needs a value}; shift 2 ;;
    --wait-timeout) wait_timeout=${2:?--wait-timeout needs a value}; shift 2 ;;
    --keep) keep=${2:?--keep needs a value}; shift 2 ;;
    --registry-user) registry_user=${2:?--registry-user needs a value}; shift 2 ;;
    -h | --help) usage ;;
    -*) die 1 "unknown option '$1' (see --help)" ;;
    *) break ;;
  esac
done
(($#)) || usage
command=$1
shift

req_provider="${DEPLOY_PROVIDER_TAG:-}"
req_gateway="${DEPLOY_GATEWAY_TAG:-}"
req_tag="${DEPLOY_TAG:-}"
rollback_mode=""
rollback_to=""
case ${command} in
  deploy)
    while (($#)); do
      case $1 in
        --tag) req_tag=${2:?--tag needs a value}; shift 2 ;;
        --provider-tag) req_provider=${2:?--provider-tag needs a value}; shift 2 ;;
        --gateway-tag) req_gateway=${2:?--gateway-tag needs a value}; shift 2 ;;
        *) die 1 "deploy: unknown argument '$1' (valid: --tag, --provider-tag, --gateway-tag)" ;;
      esac
    done
    [[ -n ${req_provider} ]] || req_provider=${req_tag}
    [[ -n ${req_gateway} ]] || req_gateway=${req_tag}
    [[ -n ${req_provider}${req_gateway} ]] || die 1 "deploy needs --tag, --provider-tag or --gateway-tag"
    [[ -z ${req_provider} ]] || need_tag "provider tag" "${req_provider}"
    [[ -z ${req_gateway} ]] || need_tag "gateway tag" "${req_gateway}"
    ;;
  rollback)
    while (($#)); do
      case $1 in
        --previous) rollback_mode=previous; shift ;;
        --to) rollback_mode=to; rollback_to=${2:?--to needs a tag, e.g. sha-1a2b3c4}; shift 2 ;;
        *) die 1 "rollback: unknown argument '$1' (valid: --previous, --to TAG)" ;;
      esac
    done
    [[ -n ${rollback_mode} ]] || die 1 "rollback needs --previous or --to TAG"
    [[ ${rollback_mode} != to ]] || need_tag "rollback --to" "${rollback_to}"
    ;;
  status)
    (($# == 0)) || die 1 "status takes no arguments (got '$1')"
    ;;
  *) die 1 "unknown command '${command}' (valid: deploy, rollback, status)" ;;
esac
need_uint --wait-timeout "${wait_timeout}"
need_uint --keep "${keep}"
if [[ -n ${registry_user} && ! ${registry_user} =~ ^[A-Za-z0-9][A-Za-z0-9._@-]{0,254}$ ]]; then
  die 1 "--registry-user '${registry_user}' is not a valid registry user name"
fi

if [[ -n ${staged} ]]; then
  [[ -f ${staged}/compose.yml && -f ${staged}/deploy/mcp-trader-deploy.sh ]] ||
    die 1 "--staged '${staged}' does not hold compose.yml and deploy/mcp-trader-deploy.sh"
  staged=$(cd "${staged}" && pwd -P)
  # The bundle is single-use: remove it whatever happens, so staging dirs never pile up.
  trap 'rm -rf -- "${staged}"' EXIT
fi
if [[ -z ${dir} ]]; then
  dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
fi
[[ -d ${dir} ]] || die 1 "deploy directory '${dir}' does not exist"
dir=$(cd "${dir}" && pwd -P)
readonly env_file="${dir}/.env"
readonly log_file="${dir}/deployments.log"
readonly lock_file="${dir}/deploy.lock"

# Values exported in the calling shell would override .env inside Compose; the tags must come
# from .env or from this script only.
unset "${PROVIDER_VAR}" "${GATEWAY_VAR}"

# ---------------------------------------------------------------------------------------------
# Compose: v2 plugin when present, else v1 (`docker-compose`) with health polled here.
command -v docker >/dev/null 2>&1 || die 1 "docker is not installed on this server"
if [[ ${MCP_TRADER_COMPOSE:-} != v1 ]] && docker compose version >/dev/null 2>&1; then
  compose_v=2
  compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose_v=1
  compose_cmd=(docker-compose)
else
  die 1 "neither 'docker compose' (v2) nor 'docker-compose' (v1) is installed"
fi

# compose_with PROVIDER_TAG GATEWAY_TAG ARGS...: Compose on this stack with the given tags.
compose_with() {
  local p=$1 g=$2 file="${dir}/compose.yml"
  local -a extra=()
  shift 2
  if ((compose_v == 1)) && [[ -f ${file} ]]; then
    # Compose v1 predates the top-level `name:` and rejects it: run a copy without that line
    # and pass the project name as v2 would pick it (COMPOSE_PROJECT_NAME first, then `name:`).
    file="${dir}/.compose-v1.yml"
    sed '/^name:/d' "${dir}/compose.yml" >"${file}"
    extra=(-p "$(v1_project)")
  fi
  env "${PROVIDER_VAR}=${p}" "${GATEWAY_VAR}=${g}" \
    "${compose_cmd[@]}" --project-directory "${dir}" -f "${file}" "${extra[@]}" "$@"
}

v1_project() {
  local name=${COMPOSE_PROJECT_NAME:-}
  [[ -n ${name} ]] || name=$(env_get COMPOSE_PROJECT_NAME)
  [[ -n ${name} ]] || name=$(sed -n "s/^name: *[\"']\{0,1\}\([A-Za-z0-9_-]*\).*/\1/p" "${dir}/compose.yml" | head -n 1)
  [[ -n ${name} ]] || name=$(basename "${dir}")
  printf '%s' "${name}"
}

# env_get KEY: the value of KEY in .env (last assignment wins, as in Compose), quotes removed.
env_get() {
  [[ -f ${env_file} ]] || return 0
  local v
  v=$(sed -n "s/^$1=//p" "${env_file}" | tail -n 1)
  v=${v%$'\r'}
  v=${v#[\"\']}
  v=${v%[\"\']}
  printf '%s' "${v}"
}

# env_pin PROVIDER_TAG GATEWAY_TAG: rewrite the two tag lines of .env atomically (temp + rename
# in the same directory), every other byte unchanged; a missing line is appended.
env_pin() {
  local p=$1 g=$2 tmp
  tmp=$(mktemp "${dir}/.env.XXXXXX")
  if [[ -f ${env_file} ]]; then
    # Tags match TAG_RE, so they carry nothing sed would interpret in a replacement.
    sed -e "s/^${PROVIDER_VAR}=.*/${PROVIDER_VAR}=${p}/" -e "s/^${GATEWAY_VAR}=.*/${GATEWAY_VAR}=${g}/" \
      "${env_file}" >"${tmp}"
    chmod --reference="${env_file}" "${tmp}"
    chown --reference="${env_file}" "${tmp}" 2>/dev/null || true
  fi
  local var val
  for var in "${PROVIDER_VAR}" "${GATEWAY_VAR}"; do
    if ! grep -q "^${var}=" "${tmp}"; then
      [[ ${var} == "${PROVIDER_VAR}" ]] && val=${p} || val=${g}
      # Keep the last existing line whole: add its missing newline before appending.
      if [[ -s ${tmp} && $(tail -c 1 "${tmp}" | od -An -c | tr -d ' ') != '\n' ]]; then
        printf '\n' >>"${tmp}"
      fi
      printf '%s=%s\n' "${var}" "${val}" >>"${tmp}"
    fi
  done
  sync "${tmp}" 2>/dev/null || true
  mv -f -- "${tmp}" "${env_file}"
}

# images_of PROVIDER_TAG GATEWAY_TAG: prints "provider_image gateway_image" as Compose resolves them.
images_of() {
  local cfg p_img g_img
  cfg=$(compose_with "$1" "$2" config) || die 1 "compose.yml in ${dir} does not validate (docker compose config failed)"
  p_img=$(sed -n "s|^ *image: *['\"]\{0,1\}\([^'\"]*/${PROVIDER_SERVICE}:[^'\"]*\)['\"]\{0,1\} *$|\1|p" <<<"${cfg}" | head -n 1)
  g_img=$(sed -n "s|^ *image: *['\"]\{0,1\}\([^'\"]*/${GATEWAY_SERVICE}:[^'\"]*\)['\"]\{0,1\} *$|\1|p" <<<"${cfg}" | head -n 1)
  [[ -n ${p_img} && -n ${g_img} ]] || die 1 "compose.yml does not name the ${PROVIDER_SERVICE} and ${GATEWAY_SERVICE} images"
  printf '%s %s\n' "${p_img}" "${g_img}"
}

# Container health of one service: healthy, unhealthy, starting, none (no healthcheck), missing.
service_health() {
  local id
  id=$(compose_with "${cur_provider:-latest}" "${cur_gateway:-latest}" ps -q "$1" 2>/dev/null | head -n 1)
  [[ -n ${id} ]] || { echo missing; return; }
  docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "${id}" 2>/dev/null || echo missing
}

# bring_up PROVIDER_TAG GATEWAY_TAG: start the stack on those (already pulled) images and wait
# until every service is healthy. `--pull missing` downloads nothing in the normal case; it only
# refetches an image removed since the pull (a concurrent `docker image prune`). The provider goes first with --no-deps, so the gateway keeps
# serving while the provider is replaced; then the gateway, whose swap is the only outage.
bring_up() {
  local p=$1 g=$2 svc deadline state
  if ((compose_v == 2)); then
    if [[ ${DEPLOY_ORDER:-rolling} == together ]]; then
      compose_with "${p}" "${g}" up -d --wait --wait-timeout "${wait_timeout}" --pull missing --remove-orphans
      return
    fi
    compose_with "${p}" "${g}" up -d --wait --wait-timeout "${wait_timeout}" --pull missing --no-deps "${PROVIDER_SERVICE}" &&
      compose_with "${p}" "${g}" up -d --wait --wait-timeout "${wait_timeout}" --pull missing --remove-orphans "${GATEWAY_SERVICE}"
    return
  fi
  # Compose v1 has no --wait: start, then poll Docker's health status of each container.
  compose_with "${p}" "${g}" up -d --no-deps "${PROVIDER_SERVICE}" || return 1
  for svc in "${PROVIDER_SERVICE}" "${GATEWAY_SERVICE}"; do
    if [[ ${svc} == "${GATEWAY_SERVICE}" ]]; then
      compose_with "${p}" "${g}" up -d --no-deps --remove-orphans "${GATEWAY_SERVICE}" || return 1
    fi
    deadline=$((SECONDS + wait_timeout))
    while :; do
      state=$(cur_provider=${p} cur_gateway=${g} service_health "${svc}")
      [[ ${state} == healthy ]] && break
      if [[ ${state} == unhealthy || ${state} == exited || ${state} == dead ]] || ((SECONDS >= deadline)); then
        log "${svc} is ${state} (waited up to ${wait_timeout}s)"
        return 1
      fi
      sleep 1
    done
  done
}

# record ACTION FROM_P FROM_G TO_P TO_G RESULT START [SHA]: one JSON line in deployments.log.
# Every value is a validated tag, a fixed word or a number, so no JSON escaping is needed.
record() {
  local from='null'
  [[ -z $2 ]] || from=$(printf '{"provider":"%s","gateway":"%s"}' "$2" "$3")
  printf '{"time":"%s","action":"%s","user":"%s","from":%s,"to":{"provider":"%s","gateway":"%s"},"result":"%s","duration_s":%s,"sha":"%s"}\n' \
    "$(now_iso)" "$1" "$(id -un | tr -cd 'A-Za-z0-9._@-')" "${from}" "$4" "$5" "$6" "$(elapsed "$7")" "${8:-}" >>"${log_file}"
}

# The history of what ran, newest last, one "provider gateway" pair per line: deploys and
# rollbacks --to push; rollback --previous pops (so repeating it walks further back).
history_stack() {
  [[ -f ${log_file} ]] || return 0
  local -a stack=()
  local action p g top
  local n
  while read -r action p g; do
    n=${#stack[@]}
    if [[ ${action} == rollback-previous ]] && ((n > 0)); then
      unset 'stack[n-1]'
      n=$((n - 1))
    fi
    top=""
    ((n == 0)) || top=${stack[n - 1]}
    [[ ${top} == "${p} ${g}" ]] || stack+=("${p} ${g}")
  done < <(sed -n 's/.*"action":"\([a-z-]*\)".*"to":{"provider":"\([^"]*\)","gateway":"\([^"]*\)"},"result":"ok".*/\1 \2 \3/p' "${log_file}")
  ((${#stack[@]} == 0)) || printf '%s\n' "${stack[@]}"
}

# The OCI revision label of an image (the git sha it was built from), or empty.
revision_of() {
  { docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.revision"}}' "$1" 2>/dev/null || true; } | tr -cd 'A-Za-z0-9'
}

# Remove this stack's images (these two repositories only) that none of the last $keep
# deployments used. Images still in use by a container are refused by Docker and kept.
prune_images() {
  local p_repo=$1 g_repo=$2 ref repo tag keep_list
  keep_list=$(sed -n 's/.*"to":{"provider":"\([^"]*\)","gateway":"\([^"]*\)"},"result":"ok".*/\1 \2/p' "${log_file}" 2>/dev/null |
    tac | awk '!seen[$0]++' | head -n "${keep}")
  for repo in "${p_repo}" "${g_repo}"; do
    while read -r ref; do
      [[ -n ${ref} ]] || continue
      tag=${ref##*:}
      if [[ ${tag} == '<none>' ]]; then
        continue
      fi
      if [[ ${repo} == "${p_repo}" ]]; then
        awk -v t="${tag}" '$1 == t { f = 1 } END { exit !f }' <<<"${keep_list}" && continue
      else
        awk -v t="${tag}" '$2 == t { f = 1 } END { exit !f }' <<<"${keep_list}" && continue
      fi
      if docker image rm "${ref}" >/dev/null 2>&1; then
        log "pruned ${ref} (older than the last ${keep} deployments)"
      fi
    done < <(docker image ls --format '{{.Repository}}:{{.Tag}}' "${repo}")
  done
}

# ---------------------------------------------------------------------------------------------
if [[ ${command} == status ]]; then
  cur_provider=$(env_get "${PROVIDER_VAR}")
  cur_gateway=$(env_get "${GATEWAY_VAR}")
  echo "directory: ${dir}"
  echo "compose:   v${compose_v}"
  echo "pinned:    ${PROVIDER_SERVICE}=${cur_provider:-<unpinned: latest>} ${GATEWAY_SERVICE}=${cur_gateway:-<unpinned: latest>}"
  if [[ -s ${lock_file} ]] && ! flock -n "${lock_file}" true; then
    echo "deploying: $(head -n 1 "${lock_file}")"
  fi
  all_healthy=1
  for svc in "${PROVIDER_SERVICE}" "${GATEWAY_SERVICE}"; do
    state=$(service_health "${svc}")
    image=$(docker inspect -f '{{.Config.Image}}' "$(compose_with "${cur_provider:-latest}" "${cur_gateway:-latest}" ps -q "${svc}" 2>/dev/null | head -n 1)" 2>/dev/null || echo -)
    printf 'service:   %-17s %-10s %s\n' "${svc}" "${state}" "${image}"
    [[ ${state} == healthy ]] || all_healthy=0
  done
  if [[ -s ${log_file} ]]; then
    echo "last deployments (${log_file}):"
    tail -n 5 "${log_file}"
  fi
  ((all_healthy)) || exit 6
  exit 0
fi

# ---------------------------------------------------------------------------------------------
# deploy / rollback: one at a time per directory.
exec 9>>"${lock_file}"
if ! flock -n 9; then
  die 2 "another deploy is running in ${dir}: $(head -n 1 "${lock_file}" 2>/dev/null || echo 'holder unknown')"
fi
printf 'pid=%s user=%s host=%s since=%s command=%s\n' "$$" "$(id -un)" "$(hostname)" "$(now_iso)" "${command}" >"${lock_file}"
started=$(now_s)

if [[ -n ${staged} ]]; then
  # Install the shipped files under the lock (each via temp + rename, so a concurrent reader
  # sees the old or the new file, never half of one).
  mkdir -p "${dir}/deploy"
  for f in compose.yml deploy/providers.yaml deploy/mcp-trader-deploy.sh; do
    [[ -f ${staged}/${f} ]] || continue
    cp -- "${staged}/${f}" "${dir}/${f}.new"
    chmod 0644 "${dir}/${f}.new"
    [[ ${f} != *.sh ]] || chmod 0755 "${dir}/${f}.new"
    mv -f -- "${dir}/${f}.new" "${dir}/${f}"
  done
fi
[[ -f ${dir}/compose.yml ]] || die 1 "no compose.yml in ${dir}"

cur_provider=$(env_get "${PROVIDER_VAR}")
cur_gateway=$(env_get "${GATEWAY_VAR}")
for pair in "provider:${cur_provider}" "gateway:${cur_gateway}"; do
  [[ -z ${pair#*:} ]] || valid_tag "${pair#*:}" || die 1 "${env_file} pins an invalid ${pair%%:*} tag '${pair#*:}'; fix it by hand first"
done
# What runs now (if anything) is what a failed deploy must come back to.
running=$(compose_with "${cur_provider:-latest}" "${cur_gateway:-latest}" ps -q 2>/dev/null || true)
from_provider=${cur_provider}
from_gateway=${cur_gateway}
if [[ -n ${running} && -z ${from_provider} ]]; then from_provider=latest; fi
if [[ -n ${running} && -z ${from_gateway} ]]; then from_gateway=latest; fi

case ${command} in
  deploy)
    action=deploy
    new_provider=${req_provider:-${cur_provider}}
    new_gateway=${req_gateway:-${cur_gateway}}
    [[ -n ${new_provider} && -n ${new_gateway} ]] ||
      die 1 "nothing is pinned yet in ${env_file}: the first deploy needs both tags (--tag)"
    ;;
  rollback)
    if [[ ${rollback_mode} == to ]]; then
      action=rollback-to
      new_provider=${rollback_to}
      new_gateway=${rollback_to}
    else
      action=rollback-previous
      mapfile -t stack < <(history_stack)
      ((${#stack[@]} >= 2)) || die 1 "rollback --previous: ${log_file} records no deployment before the current one"
      read -r new_provider new_gateway <<<"${stack[${#stack[@]} - 2]}"
      if ! valid_tag "${new_provider}" || ! valid_tag "${new_gateway}"; then
        die 1 "${log_file} holds an invalid tag pair '${stack[${#stack[@]} - 2]}'"
      fi
    fi
    ;;
esac

imgs=$(images_of "${new_provider}" "${new_gateway}")
read -r new_p_img new_g_img <<<"${imgs}"
log "${action}: ${PROVIDER_SERVICE} ${from_provider:-none} -> ${new_provider}, ${GATEWAY_SERVICE} ${from_gateway:-none} -> ${new_gateway}"

if [[ -n ${registry_user} ]]; then
  registry=${new_p_img%%/*}
  [[ ${registry} == *[.:]* || ${registry} == localhost ]] || registry=docker.io
  log "logging in to ${registry} as ${registry_user} (token from stdin)"
  docker login --username "${registry_user}" --password-stdin "${registry}" >/dev/null ||
    die 3 "registry login to ${registry} failed; nothing was changed"
fi

# 1. Pull: nothing running is touched until both images are here.
log "pulling ${new_p_img} and ${new_g_img}"
if ! compose_with "${new_provider}" "${new_gateway}" pull "${PROVIDER_SERVICE}" "${GATEWAY_SERVICE}"; then
  record "${action}" "${from_provider}" "${from_gateway}" "${new_provider}" "${new_gateway}" pull-failed "${started}"
  die 3 "pull failed (tag missing, registry down or no access); nothing was changed, still on ${PROVIDER_SERVICE}=${from_provider:-none} ${GATEWAY_SERVICE}=${from_gateway:-none}"
fi
sha=""
[[ ${new_provider} != sha-* ]] || sha=${new_provider#sha-}
[[ -n ${sha} ]] || sha=$(revision_of "${new_p_img}")

# 2. Apply, gated on the services' healthchecks.
log "starting ${new_provider}/${new_gateway} and waiting up to ${wait_timeout}s for health"
if bring_up "${new_provider}" "${new_gateway}"; then
  # 3. Pin: a reboot or a manual `docker compose up -d` now keeps this version.
  env_pin "${new_provider}" "${new_gateway}"
  record "${action}" "${from_provider}" "${from_gateway}" "${new_provider}" "${new_gateway}" ok "${started}" "${sha}"
  prune_images "${new_p_img%:*}" "${new_g_img%:*}"
  # The result on stdout (progress went to stderr): what `dagger call deploy` returns.
  printf '%s ok: %s=%s %s=%s healthy and pinned in %s (%ss)\n' "${action}" "${PROVIDER_SERVICE}" "${new_provider}" \
    "${GATEWAY_SERVICE}" "${new_gateway}" "${env_file}" "$(elapsed "${started}")"
  exit 0
fi

# 4. Unhealthy: go back to what ran before (its images are still here; .env still pins it).
log "${new_provider}/${new_gateway} did not become healthy within ${wait_timeout}s"
compose_with "${new_provider}" "${new_gateway}" ps >&2 || true
if [[ -z ${from_provider} ]]; then
  compose_with "${new_provider}" "${new_gateway}" down >&2 || true
  record "${action}" "" "" "${new_provider}" "${new_gateway}" unhealthy-rolled-back "${started}" "${sha}"
  die 4 "${action} failed: ${new_provider}/${new_gateway} unhealthy; rolled back to the previous state (nothing was running, so the stack is stopped)"
fi
log "rolling back to ${PROVIDER_SERVICE}=${from_provider} ${GATEWAY_SERVICE}=${from_gateway}"
if bring_up "${from_provider}" "${from_gateway}"; then
  record "${action}" "${from_provider}" "${from_gateway}" "${new_provider}" "${new_gateway}" unhealthy-rolled-back "${started}" "${sha}"
  die 4 "${action} failed: ${new_provider}/${new_gateway} did not become healthy; rolled back to ${PROVIDER_SERVICE}=${from_provider} ${GATEWAY_SERVICE}=${from_gateway}, which is healthy again"
fi
record "${action}" "${from_provider}" "${from_gateway}" "${new_provider}" "${new_gateway}" unhealthy-restore-failed "${started}" "${sha}"
die 5 "${action} failed: ${new_provider}/${new_gateway} unhealthy AND the rollback to ${from_provider}/${from_gateway} did not become healthy either; check 'docker compose ps' and the logs in ${dir}"
