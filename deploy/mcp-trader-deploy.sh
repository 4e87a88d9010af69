#!/usr/bin/env bash
# mcp-trader-deploy.sh: deploy, roll back and inspect the mcp-trader Compose stack on this server.
#
# Runs ON the server, shipped and started over SSH by `dagger call server ... deploy|rollback|
# status|attach`, or by hand. The deploy directory (default: the parent of this script's
# directory) holds:
#   compose.yml, deploy/       the installed bundle (shipped with every deploy; replaced as a whole)
#   .env                       the server's settings and secrets; only the BINANCE_IMAGE_TAG and
#                              GATEWAY_IMAGE_TAG values are ever rewritten, in the form they are written
#   deployments.log            one JSON line per deploy/rollback attempt
#   deploy.lock                flock target (never written)
#   .deploy-state/             holder (who deploys now), intent (the run in progress), runs/ (each
#                              run's output and exit status), bundles/ (every bundle deployed recently),
#                              secrets/session-secret (the gateways' shared session secret, made once)
#   .incoming/<run>/           a freshly shipped bundle, removed when its run ends
#
# Usage:
#   mcp-trader-deploy.sh [GLOBAL OPTIONS] deploy [--tag T] [--provider-tag T] [--gateway-tag T]
#   mcp-trader-deploy.sh [GLOBAL OPTIONS] rollback (--previous | --to T | --to-provider T --to-gateway T)
#   mcp-trader-deploy.sh [GLOBAL OPTIONS] status
#   mcp-trader-deploy.sh [GLOBAL OPTIONS] attach [--run RUN]
#   mcp-trader-deploy.sh [GLOBAL OPTIONS] secret   (make the session secret if missing; prints its path)
# A tag T is TAG or TAG@sha256:<64 hex> (pinned as given; Compose then pulls by digest).
# Global options:
#   --dir DIR             deploy directory (env MCP_TRADER_DIR)
#   --staged DIR          a freshly shipped bundle, DIR/.incoming/<name> of the deploy directory
#   --run-id ID           the id of this run (default: time and pid); names its output for attach
#   --wait-timeout SECS   how long a version may take to become healthy (env DEPLOY_WAIT_TIMEOUT, 120)
#   --keep N              keep the images of the last N deployments (env DEPLOY_KEEP, 5)
#   --registry HOST       the registry the token is for; it is sent nowhere else
#   --registry-user USER  log in to --registry first; the token is read from stdin
#   --signature WORD      verified | unsigned (default): how the images were checked, for the log
#   --provider-commit HEX, --gateway-commit HEX
#                         the source commit each image's verified provenance names, for the log
# Deploy tags also come from env DEPLOY_TAG, DEPLOY_PROVIDER_TAG, DEPLOY_GATEWAY_TAG. A service
# without a requested tag keeps the version that runs now.
#
# Exit codes: 0 done; 1 bad usage or input, refused before any change; 2 another deploy holds the
# lock; 3 failed before the switch (registry login, pull, disk): nothing was changed; 4 the new
# version was unhealthy, the previous bundle and tags are restored and healthy; 5 unhealthy, and
# the previous version did not come back healthy either; 6 status: not every service is healthy;
# 7 needs attention: an interrupted run, or what runs is not what .env pins; 8 the new version
# runs (healthy) but pinning it in .env or recording it in the log failed (e.g. a full disk).
#
# How a run survives its SSH connection: deploy and rollback start the real work as a detached
# worker (`setsid -f`: its own session, no terminal, stdin/stdout/stderr on files) and this
# process only follows the worker's output file and exit file. When the client or the sshd child
# dies, the worker keeps going, rollback included; `status` and `attach` report how it ended.
# setsid is util-linux, present on every Debian/Ubuntu; systemd-run would need a systemd user
# manager (lingering) for the deploy user, which a plain docker-group account does not have.

readonly SCRIPT_NAME=mcp-trader-deploy.sh
readonly PROVIDER_SERVICE=binance-provider
readonly GATEWAY_SERVICE=mcp-gateway
readonly PROVIDER_VAR=BINANCE_IMAGE_TAG
readonly GATEWAY_VAR=GATEWAY_IMAGE_TAG
# Docker's tag grammar (what a registry accepts), optionally pinned to a manifest digest.
readonly TAG_RE='^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}(@sha256:[0-9a-f]{64})?$'
readonly DIGEST_RE='^sha256:[0-9a-f]{64}$'
# Run ids and staging directory names.
readonly NAME_RE='^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$'
readonly COMMIT_RE='^[0-9a-f]{7,64}$'
readonly REGISTRY_RE='^[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?(:[0-9]{1,5})?$'
# A registry user name is any non-empty word (GHCR bots are `github-actions[bot]`): it only ever
# travels as one argument to `docker login --username`. The module's tags.py says the same.
readonly REGISTRY_USER_BAD_RE='[[:space:][:cntrl:]]'
# The exit file of a run is written once at its start with this many bytes and later overwritten
# in place, so the outcome can still be recorded when the disk is full.
readonly EXIT_FILE_BYTES=4096

# The no-gap rollout of one service (functions only), shipped next to this script.
# shellcheck source=deploy/rollout.sh
source -- "$(dirname -- "${BASH_SOURCE[0]}")/rollout.sh" || {
  printf '[mcp-trader-deploy] error: %s/rollout.sh is missing (ship the whole deploy/ directory)\n' "$(dirname -- "${BASH_SOURCE[0]}")" >&2
  exit 1
}

readonly EXIT_OK=0 EXIT_USAGE=1 EXIT_LOCKED=2 EXIT_UNCHANGED=3 EXIT_ROLLED_BACK=4
readonly EXIT_RESTORE_FAILED=5 EXIT_UNHEALTHY=6 EXIT_ATTENTION=7 EXIT_UNRECORDED=8

# ---------------------------------------------------------------------------------------------
# Output and failure. Progress goes to stderr; `finish` ends every run with one message.

log() { printf '[mcp-trader-deploy] %s\n' "$*" >&2; }

# finish CODE MESSAGE: print the outcome and exit (the worker's EXIT trap records it). A
# failure message ends by naming what runs now (the operator's first question), unless it was
# a refusal of the front before anything ran (bad usage).
finish() {
  final_code=$1
  shift
  final_msg="$*"
  if ((final_code != 0)) && [[ -n ${env_file:-} && ${final_msg} != *"running now: "* ]] &&
    { ((${worker:-0})) || ((final_code != EXIT_USAGE)); }; then
    final_msg+="; running now: $(now_running)"
  fi
  if ((final_code == 0)); then log "${final_msg}"; else log "error: ${final_msg}"; fi
  exit "${final_code}"
}
die() { finish "$@"; }

usage() {
  sed -n '/^# Usage:/,/^# Exit codes/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
  exit "${EXIT_USAGE}"
}

now_iso() { date -u +%Y-%m-%dT%H:%M:%SZ; }
now_s() { printf '%s' "${EPOCHREALTIME:-$(date +%s.%N)}"; }
elapsed() { awk -v a="$1" -v b="$(now_s)" 'BEGIN { printf "%.3f", b - a }'; }

valid_tag() { [[ $1 =~ ${TAG_RE} ]]; }
need_tag() {
  valid_tag "$2" || die "${EXIT_USAGE}" "$1 '$2' is not a valid image tag (letters, digits, '_', '.', '-'; at most 128; not starting with '.' or '-'; optionally @sha256:<64 lowercase hex>)"
}
need_uint() {
  if [[ ! $2 =~ ^[0-9]{1,6}$ ]] || ((10#$2 == 0)); then
    die "${EXIT_USAGE}" "$1 '$2' must be a positive whole number"
  fi
}
# The tag part of a tag that may carry a digest: sha-1a2b3c4@sha256:... -> sha-1a2b3c4.
tag_name() { printf '%s' "${1%%@*}"; }

# ---------------------------------------------------------------------------------------------
# Paths of one deploy directory.

set_dir() {
  dir=$1
  env_file="${dir}/.env"
  log_file="${dir}/deployments.log"
  lock_file="${dir}/deploy.lock"
  state_dir="${dir}/.deploy-state"
  holder_file="${state_dir}/holder"
  intent_file="${state_dir}/intent"
  runs_dir="${state_dir}/runs"
  bundles_dir="${state_dir}/bundles"
  secrets_dir="${state_dir}/secrets"
  secret_file="${secrets_dir}/session-secret"
  incoming_dir="${dir}/.incoming"
}

# fsync a file (or directory): a rename is only as durable as the data before it.
sync_path() { sync -- "$1" 2>/dev/null || sync; }

# ---------------------------------------------------------------------------------------------
# Processes: a pid is only "the same process" when its start time matches too (pids are reused).

# proc_start PID: its start time in clock ticks since boot; fails when it is gone or a zombie.
proc_start() {
  local stat rest
  [[ $1 =~ ^[0-9]+$ ]] || return 1
  { stat=$(<"/proc/$1/stat"); } 2>/dev/null || return 1
  rest=${stat##*) }
  local -a f
  read -ra f <<<"${rest}"
  [[ ${f[0]} != Z && ${f[0]} != X ]] || return 1
  printf '%s' "${f[19]}"
}
# proc_alive PID [START]
proc_alive() {
  local s
  s=$(proc_start "$1") || return 1
  [[ -z ${2:-} || ${s} == "$2" ]]
}

# ---------------------------------------------------------------------------------------------
# .env as Compose reads it (compose-go's dotenv, Compose v2): `KEY=VALUE`, `KEY = VALUE`,
# `KEY: VALUE`, `export KEY=VALUE`, leading blanks; values bare (an inline comment starts at
# " #", trailing blanks and CR are not part of the value), 'single' or "double" quoted (a
# quoted value may span lines), the last assignment of a key counts. The tag lines are read and
# rewritten in their own form; every other byte stays as it is.

declare -gA env_idx=() env_pre=() env_quote=() env_val=() env_post=() env_count=() env_all=()
declare -ga env_lines=()
env_newline_at_end=1
env_eol=""
problem=""

is_tag_var() { [[ $1 == "${PROVIDER_VAR}" || $1 == "${GATEWAY_VAR}" ]]; }

# env_closing_quote STRING QUOTE START: index of the first QUOTE at or after START that is not
# escaped by a backslash (Compose's rule), or fail.
env_closing_quote() {
  local s=$1 q=$2 i=$3
  for ((; i < ${#s}; i++)); do
    if [[ ${s:i:1} == "${q}" ]] && { ((i == 0)) || [[ ${s:i-1:1} != "\\" ]]; }; then
      printf '%s' "${i}"
      return 0
    fi
  done
  return 1
}

# env_scan FILE: parse FILE (sets the env_* globals); fails with problem naming the line
# when a tag assignment has a form that cannot be rewritten safely.
env_scan() {
  local file=$1 i line lead rest key value q pos inside post trimmed open=""
  env_lines=()
  env_newline_at_end=1
  env_eol=""
  problem=""
  env_all=()
  for key in "${PROVIDER_VAR}" "${GATEWAY_VAR}"; do
    env_idx[${key}]=-1 env_pre[${key}]="" env_quote[${key}]="" env_val[${key}]="" env_post[${key}]=""
    env_count[${key}]=0
  done
  [[ -e ${file} ]] || return 0
  if [[ ! -r ${file} ]]; then
    problem="${file} is not readable"
    return 1
  fi
  if [[ $(tr -d '\000' <"${file}" | wc -c) != "$(wc -c <"${file}")" ]]; then
    problem="${file} contains NUL bytes; Compose cannot read it either"
    return 1
  fi
  mapfile -t env_lines <"${file}"
  if [[ -s ${file} && $(tail -c 1 "${file}" | wc -l) -eq 0 ]]; then env_newline_at_end=0; fi
  if [[ ${env_lines[0]:-} == *$'\r' ]]; then env_eol=$'\r'; fi
  for i in "${!env_lines[@]}"; do
    line=${env_lines[i]}
    if [[ -n ${open} ]]; then
      # Inside a quoted value that spans lines: only its closing quote matters.
      if env_closing_quote "${line}" "${open}" 0 >/dev/null; then open=""; fi
      continue
    fi
    lead=${line%%[![:space:]]*}
    rest=${line#"${lead}"}
    [[ -n ${rest} && ${rest} != '#'* ]] || continue
    if [[ ${rest} =~ ^export[[:blank:]]+(.*)$ ]]; then rest=${BASH_REMATCH[1]}; fi
    if [[ ! ${rest} =~ ^([A-Za-z0-9_.-]+)[[:blank:]]*[=:][[:blank:]]*(.*)$ ]]; then
      key=${rest%%[[:space:]]*}
      if is_tag_var "${key}"; then
        problem="${file} line $((i + 1)): '${key}' has no value (a bare name takes its value from the environment); write ${key}=TAG"
        return 1
      fi
      continue
    fi
    key=${BASH_REMATCH[1]}
    value=${BASH_REMATCH[2]}
    q=""
    if [[ ${value} == [\"\']* ]]; then
      q=${value:0:1}
      if ! pos=$(env_closing_quote "${value}" "${q}" 1); then
        if is_tag_var "${key}"; then
          problem="${file} line $((i + 1)): the ${q}quoted value of ${key} does not end on its line; write the tag on one line"
          return 1
        fi
        open=${q}
        continue
      fi
      inside=${value:1:pos-1}
      post=${value:pos+1}
      if is_tag_var "${key}" && [[ ! ${post} =~ ^[[:space:]]*(#.*)?$ ]]; then
        problem="${file} line $((i + 1)): unexpected text after the quoted value of ${key}: '${post}'"
        return 1
      fi
    else
      inside=${value%% #*}
      trimmed=${inside%"${inside##*[![:space:]]}"}
      post=${value:${#trimmed}}
      inside=${trimmed}
    fi
    env_all[${key}]=${inside}
    is_tag_var "${key}" || continue
    env_idx[${key}]=${i}
    env_pre[${key}]=${line:0:${#line}-${#value}}
    env_quote[${key}]=${q}
    env_val[${key}]=${inside}
    env_post[${key}]=${post}
    env_count[${key}]=$((env_count[${key}] + 1))
  done
  return 0
}

# env_check_pins: the pinned values, if any, must be tags (an expansion like ${X} is refused).
env_check_pins() {
  local key
  for key in "${PROVIDER_VAR}" "${GATEWAY_VAR}"; do
    if [[ -n ${env_val[${key}]} ]] && ! valid_tag "${env_val[${key}]}"; then
      problem="${env_file} line $((env_idx[${key}] + 1)): ${key} is '${env_val[${key}]}', not a literal image tag; fix it by hand first"
      return 1
    fi
  done
}

# env_render PROVIDER_TAG GATEWAY_TAG: the scanned file with the two values replaced, in place
# and in their own form; a key without an assignment is appended (in the file's line ending).
env_render() {
  local -a out=("${env_lines[@]}")
  local key val i n=${#env_lines[@]} appended=""
  for key in "${PROVIDER_VAR}" "${GATEWAY_VAR}"; do
    if [[ ${key} == "${PROVIDER_VAR}" ]]; then val=$1; else val=$2; fi
    i=${env_idx[${key}]}
    if ((i >= 0)); then
      out[i]="${env_pre[${key}]}${env_quote[${key}]}${val}${env_quote[${key}]}${env_post[${key}]}"
    else
      appended+="${key}=${val}${env_eol}"$'\n'
    fi
  done
  local text=""
  if ((n > 0)); then
    local IFS=$'\n'
    text=${out[*]}
    if ((env_newline_at_end)); then
      text+=$'\n'
    elif [[ -n ${appended} ]]; then
      # Keep the last line whole: give it its missing line ending before appending.
      text+="${env_eol}"$'\n'
    fi
  fi
  printf '%s' "${text}${appended}"
}

# env_target: the file a pin writes: .env, or the file its symlink resolves to.
env_target() {
  if [[ -L ${env_file} ]]; then readlink -f -- "${env_file}"; else printf '%s' "${env_file}"; fi
}

# env_preflight: can .env be rewritten keeping its mode and owner? Checked before any change.
env_preflight() {
  local target tdir owner group
  target=$(env_target) || {
    problem="cannot resolve ${env_file}"
    return 1
  }
  if [[ -L ${env_file} && ! -e ${target} ]]; then
    problem="${env_file} is a symlink to ${target}, which does not exist"
    return 1
  fi
  tdir=$(dirname -- "${target}")
  if [[ -e ${target} ]]; then
    if [[ ! -f ${target} ]]; then
      problem="${target} is not a regular file"
      return 1
    fi
    if (($(stat -c %h -- "${target}") > 1)); then
      problem="${target} has $(stat -c %h -- "${target}") hard links; rewriting it (new file + rename) would split them: make it one file"
      return 1
    fi
    owner=$(stat -c %u -- "${target}")
    group=$(stat -c %g -- "${target}")
    if ((EUID != 0)); then
      if ((owner != EUID)); then
        problem="${target} is owned by uid ${owner}; the deploy user (uid ${EUID}) could rewrite it only by changing its owner: chown it to the deploy user"
        return 1
      fi
      if [[ " $(id -G) " != *" ${group} "* ]]; then
        problem="${target} belongs to group ${group}, which the deploy user is not in; a rewrite could not keep it"
        return 1
      fi
    fi
  fi
  if [[ ! -w ${tdir} ]]; then
    problem="cannot create the rewritten ${target##*/} in ${tdir} (not writable by the deploy user)"
    return 1
  fi
}

# env_pin PROVIDER_TAG GATEWAY_TAG: write the two values (temp file in the target's directory,
# same mode and owner, fsync, rename). Nothing is written when both are already pinned.
env_pin() {
  local p=$1 g=$2 target tmp
  if ((env_idx[${PROVIDER_VAR}] >= 0 && env_idx[${GATEWAY_VAR}] >= 0)) &&
    [[ ${env_val[${PROVIDER_VAR}]} == "${p}" && ${env_val[${GATEWAY_VAR}]} == "${g}" ]]; then
    return 0
  fi
  local text
  # The whole file in one variable (the x keeps its trailing newlines), so what reaches the
  # disk can be checked byte for byte before it replaces .env.
  text=$(env_render "${p}" "${g}" && printf x) || return 1
  text=${text%x}
  target=$(env_target) || return 1
  tmp=$(mktemp -- "$(dirname -- "${target}")/.${target##*/}.XXXXXX") || return 1
  if ! {
    printf '%s' "${text}" >"${tmp}" && [[ $(stat -c %s -- "${tmp}") == "${#text}" ]] &&
      if [[ -e ${target} ]]; then
        chmod --reference="${target}" -- "${tmp}" && chown --reference="${target}" -- "${tmp}"
      else
        chmod 0600 -- "${tmp}"
      fi &&
      sync_path "${tmp}" &&
      mv -f -T -- "${tmp}" "${target}"
  }; then
    rm -f -- "${tmp}"
    return 1
  fi
  sync_path "$(dirname -- "${target}")"
  env_scan "${env_file}"
}

# ---------------------------------------------------------------------------------------------
# The gateways' session secret: made once here, kept across deploys and rollbacks (nothing ever
# replaces it), and handed to every gateway container by compose.yml (its top-level `secrets:`
# names this file), so any gateway verifies the session ids the others signed. Outside swarm
# Compose bind-mounts the file as it is (its uid, gid and mode settings are not applied), and
# the gateway runs as an unprivileged uid that owns nothing on this host: so the file is
# world-readable (0444) inside a directory that only the deploy user may enter (0700). The
# value never passes through a shell variable, a log line or a message: /dev/urandom -> file.

# 32 random bytes, written as 64 hex digits (the gateway wants 32+ characters, no whitespace).
readonly SECRET_BYTES=32
# compose.yml's secret that carries .env's MCP_SESSION_SECRET instead, and the interpolation
# that picks it (what the Compose v1 copy removes).
readonly SECRET_FROM_ENV=mcp_session_secret_from_env
# shellcheck disable=SC2016 # Compose's interpolation, literally
readonly SECRET_FROM_ENV_SUFFIX='${MCP_SESSION_SECRET:+_from_env}'

# secret_valid: the file holds one line of at least 32 characters without whitespace.
secret_valid() {
  (($(wc -l <"${secret_file}") <= 1)) && grep -qxE '[^[:space:]]{32,}' -- "${secret_file}"
} 2>/dev/null

# secret_preflight: the secret is usable, or can be made. Checked before anything changes.
secret_preflight() {
  if [[ -e ${secrets_dir} ]]; then
    if [[ -L ${secrets_dir} || ! -d ${secrets_dir} ]]; then
      problem="${secrets_dir} is not a directory"
      return 1
    fi
    local mode
    mode=$(stat -c %a -- "${secrets_dir}")
    if ((8#${mode} & 8#077)); then
      problem="${secrets_dir} is open to other users (mode ${mode}): the session secret in it is world-readable for the gateway's sake, so only its directory protects it; chmod 0700 ${secrets_dir}"
      return 1
    fi
  fi
  if [[ -e ${secret_file} || -L ${secret_file} ]]; then
    if [[ -L ${secret_file} || ! -f ${secret_file} ]]; then
      problem="${secret_file} is not a regular file"
      return 1
    fi
    secret_valid || {
      problem="${secret_file} is not a session secret (one line of at least 32 characters without whitespace); delete it and the next deploy makes a new one (every session held now then ends once)"
      return 1
    }
    return 0
  fi
  local d
  for d in "${secrets_dir}" "${state_dir}" "${dir}"; do
    [[ -e ${d} ]] || continue
    if [[ ! -d ${d} || ! -w ${d} || ! -x ${d} ]]; then
      problem="cannot make the gateways' session secret ${secret_file}: ${d} is not writable by the deploy user (uid ${EUID})"
      return 1
    fi
    return 0
  done
}

# secret_ensure: make the secret when it is missing: a private temp file in the same directory,
# fsync, then a hard link to the final name, which never replaces a file (a concurrent maker's
# secret is kept). An existing secret is never touched.
secret_ensure() {
  [[ ! -e ${secret_file} ]] || return 0
  local tmp made=0
  mkdir -p -- "${secrets_dir}" && chmod 0700 -- "${secrets_dir}" || return 1
  tmp=$(mktemp -- "${secrets_dir}/.session-secret.XXXXXX") || return 1
  if od -An -v -tx1 -N "${SECRET_BYTES}" /dev/urandom | tr -d ' \n' >"${tmp}" && printf '\n' >>"${tmp}" &&
    [[ $(stat -c %s -- "${tmp}") == $((SECRET_BYTES * 2 + 1)) ]] &&
    chmod 0444 -- "${tmp}" && sync_path "${tmp}" &&
    { ln -T -- "${tmp}" "${secret_file}" 2>/dev/null || [[ -f ${secret_file} ]]; }; then
    made=1
  fi
  rm -f -- "${tmp}"
  ((made)) || return 1
  sync_path "${secrets_dir}"
  log "made the gateways' session secret ${secret_file} (kept across deploys and rollbacks)"
}

# secret_source: where the gateways' secret comes from (for status and the secret command).
secret_source() {
  if [[ -n ${MCP_SESSION_SECRET:-}${env_all[MCP_SESSION_SECRET]:-} ]]; then
    printf 'MCP_SESSION_SECRET from %s (it wins over %s)' "${env_file##*/}" "${secret_file}"
  elif [[ -f ${secret_file} ]]; then
    printf '%s' "${secret_file}"
  else
    printf 'none yet: the next deploy (or the secret command) makes %s' "${secret_file}"
  fi
}

# ---------------------------------------------------------------------------------------------
# deployments.log: one JSON object per line, written only by `record`, read only by
# `log_records` (every other reader goes through it).

_s='"([^"\\]*)"'
_pair='\{"provider":'${_s}',"gateway":'${_s}'\}'
readonly LOG_RE='^\{"time":'${_s}',"action":'${_s}',"user":'${_s}'(,"run":'${_s}')?,"from":(null|'${_pair}'),"to":'${_pair}',"result":'${_s}',"duration_s":([0-9]+(\.[0-9]+)?),"sha":'${_s}'(,"bundle":'${_s}')?(,"digests":(null|'${_pair}'))?(,"signature":'${_s}')?(,"commits":(null|'${_pair}'))?\}$'
unset _s _pair
readonly LOG_ACTIONS=" deploy rollback-previous rollback-to "
readonly LOG_RESULTS=" ok pin-failed pull-failed login-failed switch-failed unhealthy-rolled-back unhealthy-restore-failed interrupted "

# log_records: every line of the log, parsed. A record prints as
#   LINE ok ACTION RESULT FROM_P FROM_G TO_P TO_G SHA RUN BUNDLE DIGEST_P DIGEST_G SIGNATURE TIME COMMIT_P COMMIT_G
# (COMMIT_*: the verified source commits, appended last so readers that stop at TIME still work)
# (tab-separated, '-' for an empty field); a line that is not a complete record as
#   LINE corrupt DESCRIPTION
# Blank lines are no record and nothing was lost: they are passed over.
log_records() {
  [[ -f ${log_file} ]] || return 0
  local n=0 line m v ok desc
  local -a f
  while IFS= read -r line || [[ -n ${line} ]]; do
    n=$((n + 1))
    [[ -n ${line} ]] || continue
    ok=0
    if [[ ${line} =~ ${LOG_RE} ]]; then
      m=("${BASH_REMATCH[@]}")
      f=("${m[2]}" "${m[11]}" "${m[7]}" "${m[8]}" "${m[9]}" "${m[10]}" "${m[14]}" "${m[5]}" "${m[16]}"
        "${m[19]}" "${m[20]}" "${m[22]}" "${m[1]}" "${m[25]}" "${m[26]}")
      ok=1
      [[ ${line} != *[[:cntrl:]]* ]] || ok=0
      [[ ${LOG_ACTIONS} == *" ${f[0]} "* && ${LOG_RESULTS} == *" ${f[1]} "* ]] || ok=0
      valid_tag "${f[4]}" && valid_tag "${f[5]}" || ok=0
      for v in "${f[2]}" "${f[3]}"; do [[ -z ${v} ]] || valid_tag "${v}" || ok=0; done
      for v in "${f[9]}" "${f[10]}"; do [[ -z ${v} || ${v} =~ ${DIGEST_RE} ]] || ok=0; done
      for v in "${f[13]}" "${f[14]}"; do [[ -z ${v} || ${v} =~ ${COMMIT_RE} ]] || ok=0; done
    fi
    if ((ok)); then
      for v in "${!f[@]}"; do [[ -n ${f[v]} ]] || f[v]=-; done
      printf '%s\tok' "${n}"
      printf '\t%s' "${f[@]}"
      printf '\n'
    else
      if [[ ${line} == *$'\001'* ]]; then
        v=${line//[!$'\001']/}
        desc="${#v} NUL bytes (data lost in a crash?)"
      elif [[ ${line} == '{'* && ${line} != *'}' ]]; then
        desc="truncated record"
      else
        desc="not a record this script writes"
      fi
      line=${line//[[:cntrl:]]/}
      printf '%s\tcorrupt\t%s: %s\n' "${n}" "${desc}" "${line:0:80}"
    fi
  done < <(tr '\000' '\001' <"${log_file}")
}

# log_append LINE: add one complete line; a partial last line (a crash, a full disk) is
# finished first so it stays its own (reported) line and the new record is whole.
log_append() {
  if [[ -s ${log_file} && $(tail -c 1 "${log_file}" | wc -l) -eq 0 ]]; then
    printf '\n' >>"${log_file}" || return 1
  fi
  printf '%s\n' "$1" >>"${log_file}" || return 1
  sync_path "${log_file}"
}

# record RESULT: one JSON line for this run (every value is validated: no escaping needed).
record() {
  local from=null digests=null commits=null
  [[ -z ${from_p}${from_g} ]] || from=$(printf '{"provider":"%s","gateway":"%s"}' "${from_p}" "${from_g}")
  [[ -z ${dig_p}${dig_g} ]] || digests=$(printf '{"provider":"%s","gateway":"%s"}' "${dig_p}" "${dig_g}")
  [[ -z ${commit_p:-}${commit_g:-} ]] || commits=$(printf '{"provider":"%s","gateway":"%s"}' "${commit_p:-}" "${commit_g:-}")
  log_append "$(printf '{"time":"%s","action":"%s","user":"%s","run":"%s","from":%s,"to":{"provider":"%s","gateway":"%s"},"result":"%s","duration_s":%s,"sha":"%s","bundle":"%s","digests":%s,"signature":"%s","commits":%s}' \
    "$(now_iso)" "${action}" "$(id -un | tr -cd 'A-Za-z0-9._@-')" "${run_id}" "${from}" "${to_p}" "${to_g}" \
    "$1" "$(elapsed "${started}")" "${sha}" "${to_bundle}" "${digests}" "${signature}" "${commits}")"
}

# history_scan: the deployments, as a stack (oldest first) in hist_line/hist_p/hist_g/hist_b:
# a deploy or rollback --to that ran pushes, a rollback --previous pops (repeating it walks
# further back). Corrupt lines land in log_bad_lines / log_bad.
history_scan() {
  hist_line=() hist_p=() hist_g=() hist_b=() log_bad_lines=() log_bad=()
  local n kind act res fp fg tp tg sha run bundle dp dg sig t top
  while IFS=$'\t' read -r n kind act res fp fg tp tg sha run bundle dp dg sig t; do
    if [[ ${kind} == corrupt ]]; then
      log_bad_lines+=("${n}")
      log_bad+=("line ${n}: ${act}${res:+ ${res}}")
      continue
    fi
    [[ ${res} == ok || ${res} == pin-failed ]] || continue
    top=$((${#hist_p[@]} - 1))
    if [[ ${act} == rollback-previous ]] && ((top >= 0)); then
      unset "hist_line[top]" "hist_p[top]" "hist_g[top]" "hist_b[top]"
      top=$((top - 1))
    fi
    if ((top < 0)) || [[ ${hist_p[top]} != "${tp}" || ${hist_g[top]} != "${tg}" ]]; then
      hist_line+=("${n}") hist_p+=("${tp}") hist_g+=("${tg}") hist_b+=("${bundle}")
    fi
  done < <(log_records)
}

# previous_target CURRENT_P CURRENT_G: the deployment before what runs now (or the last
# recorded one when what runs is not recorded, e.g. after an interrupted run) in tgt_p, tgt_g,
# tgt_b, tgt_line. Refuses to guess past a corrupt line.
previous_target() {
  history_scan
  local n=${#hist_p[@]} idx bad i listing=""
  if ((n > 0)) && [[ ${hist_p[n - 1]} == "$1" && ${hist_g[n - 1]} == "$2" ]]; then
    idx=$((n - 2))
  else
    idx=$((n - 1))
  fi
  for ((i = n - 1; i >= 0 && i >= n - 5; i--)); do
    listing+="${listing:+, }${hist_p[i]}/${hist_g[i]} (line ${hist_line[i]})"
  done
  for bad in "${log_bad_lines[@]}"; do
    if ((idx < 0 || bad > hist_line[idx])); then
      problem="${log_file} line ${bad} is not a complete record; rollback --previous will not guess past it: choose the version with rollback --to TAG (readable history, newest first: ${listing:-none}), and repair or delete that line once checked"
      return 1
    fi
  done
  if ((idx < 0)); then
    problem="rollback --previous: ${log_file} records no deployment before the current one"
    return 1
  fi
  tgt_p=${hist_p[idx]} tgt_g=${hist_g[idx]} tgt_b=${hist_b[idx]} tgt_line=${hist_line[idx]}
  [[ ${tgt_b} != - ]] || tgt_b=""
}

# prune_plan KEEP PROTECTED_TAG...: "provider TAG" / "gateway TAG" lines for every tag this
# directory's readable history used that none of the last KEEP deployments (nor a protected
# tag) needs. Prints nothing, and says why, when the window is not fully readable.
prune_plan() {
  local keep=$1 n kind act res fp fg tp tg rest last_bad=0 good_after=0
  shift
  local -A keep_p=() keep_g=() seen_p=() seen_g=() pairs=()
  local -a order=()
  local t
  for t in "$@"; do [[ -z ${t} ]] || keep_p[${t}]=1 keep_g[${t}]=1; done
  local -a recs=()
  mapfile -t recs < <(log_records)
  for rest in "${recs[@]}"; do
    IFS=$'\t' read -r n kind act res fp fg tp tg _ <<<"${rest}"
    if [[ ${kind} == corrupt ]]; then
      last_bad=${n} good_after=0
      continue
    fi
    [[ ${fp} == - ]] || seen_p[${fp}]=1
    [[ ${fg} == - ]] || seen_g[${fg}]=1
    seen_p[${tp}]=1 seen_g[${tg}]=1
    if [[ ${res} == ok || ${res} == pin-failed ]]; then
      good_after=$((good_after + 1))
      order+=("${tp} ${tg}")
    fi
  done
  if ((last_bad > 0 && good_after < keep)); then
    log "not pruning images: ${log_file} line ${last_bad} is corrupt and fewer than ${keep} deployments were recorded after it"
    return 0
  fi
  local i kept=0
  for ((i = ${#order[@]} - 1; i >= 0 && kept < keep; i--)); do
    [[ -z ${pairs[${order[i]}]:-} ]] || continue
    pairs[${order[i]}]=1
    kept=$((kept + 1))
    keep_p[${order[i]% *}]=1
    keep_g[${order[i]#* }]=1
  done
  for t in "${!seen_p[@]}"; do [[ -n ${keep_p[${t}]:-} ]] || printf 'provider %s\n' "${t}"; done
  for t in "${!seen_g[@]}"; do [[ -n ${keep_g[${t}]:-} ]] || printf 'gateway %s\n' "${t}"; done
}

# ---------------------------------------------------------------------------------------------
# Bundles: compose.yml plus everything under deploy/, identified by a hash of their contents.

# bundle_id DIR: 16 hex digits naming the bundle in DIR; fails when DIR holds no bundle.
bundle_id() {
  local d=$1 sums
  [[ -f ${d}/compose.yml ]] || return 1
  sums=$(cd -- "${d}" && {
    printf 'compose.yml\0'
    if [[ -d deploy ]]; then find deploy -type f -print0; fi
  } | LC_ALL=C sort -z | xargs -0 sha256sum --) || return 1
  printf '%s\n' "${sums}" | sha256sum | cut -c 1-16
}

# bundle_store SRC ID: keep a copy of the bundle in SRC as bundles/ID (once; complete or absent).
bundle_store() {
  local src=$1 id=$2 tmp
  [[ ! -d ${bundles_dir}/${id} ]] || return 0
  tmp="${bundles_dir}/.${id}.$$"
  rm -rf -- "${tmp}"
  if mkdir -p -- "${tmp}" && cp -p -- "${src}/compose.yml" "${tmp}/compose.yml" &&
    { [[ ! -d ${src}/deploy ]] || cp -Rp -- "${src}/deploy" "${tmp}/deploy"; } &&
    mv -T -- "${tmp}" "${bundles_dir}/${id}"; then
    return 0
  fi
  rm -rf -- "${tmp}"
  return 1
}

# bundle_switch NEXT DISPLACED: install the bundle in NEXT (same filesystem) with renames only,
# moving the installed one into DISPLACED; no disk space is needed.
bundle_switch() {
  local next=$1 displaced=$2
  if [[ -e ${dir}/deploy || -L ${dir}/deploy ]]; then
    mv -T -- "${dir}/deploy" "${displaced}/deploy" || return 1
  fi
  if [[ -d ${next}/deploy ]]; then mv -T -- "${next}/deploy" "${dir}/deploy" || return 1; fi
  if [[ -e ${dir}/compose.yml ]]; then
    ln -- "${dir}/compose.yml" "${displaced}/compose.yml" 2>/dev/null ||
      mv -T -- "${dir}/compose.yml" "${displaced}/compose.yml" || return 1
  fi
  mv -f -T -- "${next}/compose.yml" "${dir}/compose.yml"
}

# bundle_restore DISPLACED HAD_BUNDLE: put the displaced bundle back (or, when there was none
# before, remove what was installed).
bundle_restore() {
  local displaced=$1 had=$2
  if [[ -e ${displaced}/deploy || ${had} == 0 ]]; then rm -rf -- "${dir}/deploy"; fi
  if [[ -e ${displaced}/deploy ]]; then mv -T -- "${displaced}/deploy" "${dir}/deploy" || return 1; fi
  if [[ -e ${displaced}/compose.yml ]]; then
    mv -f -T -- "${displaced}/compose.yml" "${dir}/compose.yml" || return 1
  elif [[ ${had} == 0 ]]; then
    rm -f -- "${dir}/compose.yml"
  fi
}

# ---------------------------------------------------------------------------------------------
# Compose: v2 plugin when present, else v1 (`docker-compose`) with health polled here.

detect_compose() {
  command -v docker >/dev/null 2>&1 || {
    problem="docker is not installed on this server"
    return 1
  }
  if [[ ${MCP_TRADER_COMPOSE:-} != v1 ]] && docker compose version >/dev/null 2>&1; then
    compose_v=2
    compose_cmd=(docker compose)
  elif command -v docker-compose >/dev/null 2>&1; then
    compose_v=1
    compose_cmd=(docker-compose)
  else
    problem="neither 'docker compose' (v2) nor 'docker-compose' (v1) is installed"
    return 1
  fi
}

# COMPOSE_FILE, as Compose reads it (the environment first, then .env; ':' separates): the
# server's choice of override files, e.g. compose.yml:deploy/compose.no-proxy.yml (README "The
# proxy", "Without the proxy"). Compose itself ignores it once -f is given, so the script applies
# it: compose.yml and files under deploy/ are taken from the bundle being checked, pulled or run
# (a staged or stored one brings its own; a bundle made before such a file existed runs as it
# was made, without it, so an automatic rollback to it still works), any other path is the
# server's own file.
compose_file_list() { printf '%s' "${COMPOSE_FILE:-${env_all[COMPOSE_FILE]:-}}"; }

# compose_files_check ROOT: COMPOSE_FILE names compose.yml (refused otherwise, before any
# change); a bundle file it names that the bundle in ROOT lacks is said.
compose_files_check() {
  local list entry found=0
  local -a entries=()
  list=$(compose_file_list)
  [[ -n ${list} ]] || return 0
  IFS=: read -ra entries <<<"${list}"
  for entry in "${entries[@]}"; do
    entry=${entry#./}
    [[ ${entry} != compose.yml ]] || found=1
    if [[ ${entry} == deploy/* && ! -f $1/${entry} ]]; then
      log "warning: COMPOSE_FILE names ${entry}, which the bundle to run ($1) predates: it runs without it, as it was made"
    fi
  done
  ((found)) || problem="COMPOSE_FILE='${list}' does not list compose.yml, the file every deploy ships (e.g. COMPOSE_FILE=compose.yml:deploy/compose.no-proxy.yml)"
  ((found))
}

# compose_at FILE PROVIDER_TAG GATEWAY_TAG ARGS...: Compose on this stack (project directory:
# the deploy directory, so .env and ./deploy resolve there) with the given file (plus the
# overrides COMPOSE_FILE names, from the same bundle) and tags.
compose_at() {
  local file=$1 p=${2:-latest} g=${3:-latest} root list entry
  local -a extra=() files=() entries=()
  shift 3
  root=$(dirname -- "${file}")
  if ((compose_v == 1)) && [[ -f ${file} ]]; then
    # Compose v1 predates the top-level `name:` and rejects it: run a copy without that line
    # and pass the project name as v2 would pick it (COMPOSE_PROJECT_NAME first, then `name:`).
    # Nor does v1 know `${VAR:+…}` or secrets from the environment: the copy hands the gateway
    # the generated session secret file, always (MCP_SESSION_SECRET in .env is not used).
    local copy
    copy="$(dirname -- "${file}")/.compose-v1.yml"
    awk -v drop="  ${SECRET_FROM_ENV}:" -v suffix="${SECRET_FROM_ENV_SUFFIX}" '
      /^name:/ { next }
      skip && /^    / { next }
      { skip = 0 }
      $0 == drop { skip = 1; next }
      { i = index($0, suffix); if (i) $0 = substr($0, 1, i - 1) substr($0, i + length(suffix)); print }
    ' "${file}" >"${copy}" || return 1
    extra=(-p "$(v1_project "${file}")")
    file=${copy}
  fi
  list=$(compose_file_list)
  [[ -n ${list} ]] || files=(-f "${file}")
  IFS=: read -ra entries <<<"${list}"
  for entry in "${entries[@]}"; do
    entry=${entry#./}
    case ${entry} in
      "") ;;
      compose.yml) files+=(-f "${file}") ;;
      deploy/*) [[ ! -f ${root}/${entry} ]] || files+=(-f "${root}/${entry}") ;;
      /*) files+=(-f "${entry}") ;;
      *) files+=(-f "${dir}/${entry}") ;;
    esac
  done
  env "${PROVIDER_VAR}=${p}" "${GATEWAY_VAR}=${g}" \
    "${compose_cmd[@]}" --project-directory "${dir}" "${files[@]}" "${extra[@]}" "$@"
}
compose_with() { compose_at "${dir}/compose.yml" "$@"; }

v1_project() {
  local name=${COMPOSE_PROJECT_NAME:-}
  [[ -n ${name} ]] || name=${env_all[COMPOSE_PROJECT_NAME]:-}
  [[ -n ${name} ]] || name=$(sed -n "s/^name: *[\"']\{0,1\}\([A-Za-z0-9_-]*\).*/\1/p" "$1" | head -n 1)
  [[ -n ${name} ]] || name=$(basename -- "${dir}")
  printf '%s' "${name}"
}

# service_images FILE P G: "service image" for every service, as Compose resolves them.
service_images() {
  compose_at "$@" config | awk '
    /^services:/ { in_s = 1; next }
    /^[^ ]/ { in_s = 0 }
    in_s && /^  [^ ]/ { svc = $1; sub(/:$/, "", svc); next }
    in_s && /^    image:/ { img = $0; sub(/^    image: */, "", img); gsub(/["'\'']/, "", img); print svc, img }'
}

# images_of FILE P G: sets img_p and img_g (the two services' image references).
images_of() {
  local out svc img
  img_p="" img_g=""
  out=$(service_images "$@") || return 1
  while read -r svc img; do
    [[ ${svc} != "${PROVIDER_SERVICE}" ]] || img_p=${img}
    [[ ${svc} != "${GATEWAY_SERVICE}" ]] || img_g=${img}
  done <<<"${out}"
  [[ -n ${img_p} && -n ${img_g} ]]
}

# ref_repo REF / ref_tag REF: an image reference's repository, and its tag (with @digest).
ref_repo() {
  local r=${1%%@*} last
  last=${r##*/}
  [[ ${last} != *:* ]] || r=${r%:*}
  printf '%s' "${r}"
}
ref_tag() {
  local r=${1%%@*} d="" last t=latest
  [[ $1 != *@* ]] || d="@${1#*@}"
  last=${r##*/}
  [[ ${last} != *:* ]] || t=${last#*:}
  printf '%s%s' "${t}" "${d}"
}
# The registry part of an image reference (Docker's rule: a first component with '.' or ':',
# or localhost; otherwise Docker Hub).
ref_registry() {
  local first=${1%%/*}
  if [[ $1 == */* && (${first} == *[.:]* || ${first} == localhost) ]]; then
    printf '%s' "${first}"
  else
    printf 'docker.io'
  fi
}
registry_norm() {
  case $1 in
    index.docker.io | registry-1.docker.io | docker.io) printf 'docker.io' ;;
    *) printf '%s' "$1" ;;
  esac
}

# observe: what runs now, from the containers (not from .env): sets run_ref_p/g (image
# references), run_state_p/g (healthy, unhealthy, starting, running, exited, missing).
observe() {
  local svc id info state health image
  run_ref_p="" run_ref_g="" run_state_p=missing run_state_g=missing
  [[ -f ${dir}/compose.yml ]] || return 0
  for svc in "${PROVIDER_SERVICE}" "${GATEWAY_SERVICE}"; do
    id=$(compose_with "${env_val[${PROVIDER_VAR}]}" "${env_val[${GATEWAY_VAR}]}" ps -a -q "${svc}" 2>/dev/null | head -n 1)
    [[ -n ${id} ]] || continue
    info=$(docker inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.Config.Image}}' "${id}" 2>/dev/null) || continue
    read -r state health image <<<"${info}"
    if [[ ${state} == running && ${health} != none ]]; then state=${health}; fi
    if [[ ${svc} == "${PROVIDER_SERVICE}" ]]; then
      run_state_p=${state}
      [[ ${state} == exited || ${state} == dead || ${state} == created ]] || run_ref_p=${image}
    else
      run_state_g=${state}
      [[ ${state} == exited || ${state} == dead || ${state} == created ]] || run_ref_g=${image}
    fi
  done
}

# now_running: running_summary from any point of a run (Compose and .env read afresh, in a
# subshell: nothing of the caller's state changes).
now_running() {
  (
    detect_compose || {
      printf 'unknown (%s)' "${problem}"
      exit 0
    }
    env_scan "${env_file}" || true
    running_summary
  ) 2>/dev/null
}

# running_summary: one line naming what runs now (for every final message).
running_summary() {
  observe
  local s=""
  [[ -z ${run_ref_p} ]] || s="${PROVIDER_SERVICE}=$(ref_tag "${run_ref_p}") (${run_state_p})"
  [[ -z ${run_ref_g} ]] || s+="${s:+, }${GATEWAY_SERVICE}=$(ref_tag "${run_ref_g}") (${run_state_g})"
  printf '%s' "${s:-nothing}"
}

# image_digest REF: the registry digest of a pulled image (the pinned one for TAG@sha256:...).
image_digest() {
  local ref=$1 repo d
  if [[ ${ref} == *@sha256:* ]]; then
    printf '%s' "${ref#*@}"
    return 0
  fi
  repo=$(ref_repo "${ref}")
  for d in $(docker image inspect -f '{{range .RepoDigests}}{{.}} {{end}}' "${ref}" 2>/dev/null); do
    if [[ ${d%@*} == "${repo}" && ${d#*@} =~ ${DIGEST_RE} ]]; then
      printf '%s' "${d#*@}"
      return 0
    fi
  done
  return 1
}

# The OCI revision label of an image (the git sha it was built from), or empty.
revision_of() {
  { docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.revision"}}' "$1" 2>/dev/null || true; } | tr -cd 'A-Za-z0-9'
}

# bring_up PROVIDER_TAG GATEWAY_TAG: start the stack of the installed bundle on those (already
# pulled) images and wait until every service is healthy. The one place that starts a version:
# the deploy, the automatic rollback and rollback all come through here. Each service is rolled
# out with no gap (deploy/rollout.sh): the new container starts next to the old one, and the old
# one is drained and removed only once the new one is healthy (and, for the gateway, in the
# proxy's rotation). A new container that never becomes healthy is removed again: the old one
# kept serving throughout. Compose pulls nothing here: the images were pulled before.
bring_up() {
  local p=$1 g=$2
  if [[ ${DEPLOY_ORDER:-rolling} == together ]]; then
    # What a plain `docker compose up -d --wait` does (for the benchmark's side by side):
    # every changed container is stopped, then its replacement started.
    ((compose_v == 2)) || { log "DEPLOY_ORDER=together needs Compose v2"; return 1; }
    compose_with "${p}" "${g}" up -d --wait --wait-timeout "${wait_timeout}" --pull missing --remove-orphans
    return
  fi
  rollout_stack "${p}" "${g}"
}

# ---------------------------------------------------------------------------------------------
# The lock and its holder. The lock is flock(2) on deploy.lock, taken by the worker only; the
# holder's description is a separate file, written (temp + rename) after the lock is taken and
# removed before it is released, so a reader sees a whole description or none.

holder_write() {
  local tmp="${holder_file}.$$"
  if printf 'pid=%s start=%s run=%s user=%s host=%s since=%s command=%s\n' "$$" "$(proc_start $$)" \
    "${run_id}" "$(id -un)" "$(hostname)" "$(now_iso)" "${action_label}" >"${tmp}" &&
    mv -f -T -- "${tmp}" "${holder_file}"; then
    return 0
  fi
  rm -f -- "${tmp}"
  return 1
}

# holder_describe: who holds the lock now. The winner of a race writes its description a few
# milliseconds after taking the lock: wait for a description whose process is alive.
holder_wait_s=5
holder_describe() {
  local line pid start deadline=$((SECONDS + holder_wait_s))
  while :; do
    line=""
    { line=$(<"${holder_file}"); } 2>/dev/null || true
    if [[ ${line} =~ pid=([0-9]+)\ start=([0-9]*) ]]; then
      pid=${BASH_REMATCH[1]} start=${BASH_REMATCH[2]}
      if proc_alive "${pid}" "${start}"; then
        printf '%s' "${line}"
        return 0
      fi
    fi
    if ((SECONDS >= deadline)); then
      printf 'holder unknown (the lock is held, but no live process has described itself in %s)' "${holder_file}"
      return 0
    fi
    sleep 0.05
  done
}

# ---------------------------------------------------------------------------------------------
# The intent: what a run is about to change, written before anything changes and removed when
# the run has recorded its outcome. Found with no live holder, it is an interrupted run.

intent_write() {
  local tmp="${intent_file}.$$" text
  text=$(printf 'run=%s\npid=%s\nstart=%s\nstarted=%s\naction=%s\nphase=%s\nfrom_provider=%s\nfrom_gateway=%s\nfrom_bundle=%s\nto_provider=%s\nto_gateway=%s\nto_bundle=%s\ndisplaced=%s\nstaged=%s' \
    "${run_id}" "$$" "$(proc_start $$)" "$(now_iso)" "${action}" "$1" "${from_p}" "${from_g}" \
    "${from_bundle}" "${to_p}" "${to_g}" "${to_bundle}" "${displaced}" "${staged}")
  text+=$'\n'
  if printf '%s' "${text}" >"${tmp}" && [[ $(stat -c %s -- "${tmp}") == "${#text}" ]] &&
    sync_path "${tmp}" && mv -f -T -- "${tmp}" "${intent_file}"; then
    return 0
  fi
  rm -f -- "${tmp}"
  return 1
}

# intent_phase PHASE: note the phase (best effort: a full disk must not stop a rollback).
intent_phase() {
  intent_write "$1" 2>/dev/null || log "warning: could not note phase '$1' in ${intent_file}"
}

# intent_load FILE: the i_* variables from an intent file (known keys, checked values only).
intent_load() {
  local key value
  i_run="" i_pid="" i_started="" i_action="" i_phase="" i_from_provider="" i_from_gateway=""
  i_from_bundle="" i_to_provider="" i_to_gateway="" i_to_bundle="" i_displaced="" i_staged=""
  [[ -f $1 ]] || return 1
  while IFS='=' read -r key value; do
    case ${key} in
      run | pid | started | action | phase | from_provider | from_gateway | from_bundle | to_provider | to_gateway | to_bundle | displaced | staged)
        printf -v "i_${key}" '%s' "${value}"
        ;;
    esac
  done <"$1"
  [[ -n ${i_run} ]]
}

# ---------------------------------------------------------------------------------------------
# Runs: runs/RUN.log is the worker's whole output; runs/RUN.exit is "running pid=N start=S"
# while it runs, then "CODE\nMESSAGE" (written in place: it never needs new disk space).

run_files() {
  run_log="${runs_dir}/$1.log"
  run_exit="${runs_dir}/$1.exit"
}
run_status_init() {
  printf 'running\n%*s\n' "$((EXIT_FILE_BYTES - 9))" '' >"${run_exit}" && sync_path "${run_exit}"
}
run_status_set() {
  local msg=${2//$'\n'/ }
  printf '%s\n%s\n' "$1" "${msg:0:$((EXIT_FILE_BYTES - 64))}" 1<>"${run_exit}"
}
# run_status_get: sets run_code ("running" or a number), run_msg, run_pid, run_pid_start.
run_status_get() {
  local l1="" l2=""
  run_code="" run_msg="" run_pid="" run_pid_start=""
  { { IFS= read -r l1 && IFS= read -r l2; } <"${run_exit}"; } 2>/dev/null || [[ -n ${l1} ]] || return 1
  l2=${l2%"${l2##*[! ]}"}
  if [[ ${l1} =~ ^running( pid=([0-9]+) start=([0-9]+))? ]]; then
    run_code=running run_pid=${BASH_REMATCH[2]} run_pid_start=${BASH_REMATCH[3]}
  elif [[ ${l1} =~ ^[0-9]+$ ]]; then
    run_code=${l1} run_msg=${l2}
  else
    return 1
  fi
}
# run_latest: the id of the most recent run in this directory (by its exit file's start).
run_latest() {
  local f best=""
  for f in "${runs_dir}"/*.exit; do
    [[ -e ${f} ]] || continue
    if [[ -z ${best} || ${f} -nt ${best} ]]; then best=${f}; fi
  done
  [[ -n ${best} ]] || return 1
  best=${best##*/}
  printf '%s' "${best%.exit}"
}

# follow_run: stream the run's output to stderr until it ends; returns its exit code (and
# prints its result line on stdout when it succeeded).
follow_run() {
  local off=0 size waited=0 last
  while :; do
    run_status_get || true
    size=$(stat -c %s -- "${run_log}" 2>/dev/null || echo 0)
    if ((size > off)); then
      tail -c +"$((off + 1))" -- "${run_log}" | head -c "$((size - off))" >&2
      off=${size}
    fi
    if [[ ${run_code} != running ]]; then break; fi
    if [[ -n ${run_pid} ]]; then
      if ! proc_alive "${run_pid}" "${run_pid_start}"; then
        run_status_get || true
        [[ ${run_code} == running ]] || continue
        size=$(stat -c %s -- "${run_log}" 2>/dev/null || echo 0)
        ((size <= off)) || tail -c +"$((off + 1))" -- "${run_log}" >&2
        log "error: the server-side run ${run_id} (pid ${run_pid}) ended without recording an outcome (killed?); the next deploy or rollback reconciles it; running now: $(now_running)"
        return "${EXIT_ATTENTION}"
      fi
    elif ((waited++ > 150)); then
      log "error: the server-side run ${run_id} did not start (see ${run_log}); running now: $(now_running)"
      return "${EXIT_ATTENTION}"
    fi
    sleep 0.2
  done
  if ((run_code == 0)); then
    printf '%s\n' "${run_msg}"
  else
    last=$(tail -n 1 -- "${run_log}" 2>/dev/null || true)
    [[ ${last} == *"${run_msg}" ]] || log "error: ${run_msg}"
  fi
  return "${run_code}"
}

# ---------------------------------------------------------------------------------------------
# Arguments: everything is validated here, before the lock, a pull or any file is touched.

parse_args() {
  orig_args=("$@")
  dir="${MCP_TRADER_DIR:-}" staged="" run_id="" worker=0
  wait_timeout="${DEPLOY_WAIT_TIMEOUT:-120}" keep="${DEPLOY_KEEP:-5}"
  registry_user="" registry="" signature=unsigned commit_p="" commit_g=""
  while (($#)); do
    case $1 in
      --dir | --staged | --wait-timeout | --keep | --registry-user | --registry | --signature | --run-id | --provider-commit | --gateway-commit)
        (($# >= 2)) || die "${EXIT_USAGE}" "$1 needs a value"
        case $1 in
          --dir) dir=$2 ;;
          --staged) staged=$2 ;;
          --wait-timeout) wait_timeout=$2 ;;
          --keep) keep=$2 ;;
          --registry-user) registry_user=$2 ;;
          --registry) registry=$2 ;;
          --signature) signature=$2 ;;
          --provider-commit) commit_p=$2 ;;
          --gateway-commit) commit_g=$2 ;;
          --run-id) run_id=$2 ;;
        esac
        shift 2
        ;;
      --worker) worker=1 && shift ;;
      -h | --help) usage ;;
      -*) die "${EXIT_USAGE}" "unknown option '$1' (see --help)" ;;
      *) break ;;
    esac
  done
  (($#)) || usage
  command=$1
  shift
  req_provider="${DEPLOY_PROVIDER_TAG:-}" req_gateway="${DEPLOY_GATEWAY_TAG:-}" req_tag="${DEPLOY_TAG:-}"
  rollback_mode="" rollback_to="" rollback_to_p="" rollback_to_g="" attach_run=""
  case ${command} in
    deploy)
      while (($#)); do
        case $1 in
          --tag | --provider-tag | --gateway-tag)
            (($# >= 2)) || die "${EXIT_USAGE}" "$1 needs a value"
            case $1 in
              --tag) req_tag=$2 ;;
              --provider-tag) req_provider=$2 ;;
              --gateway-tag) req_gateway=$2 ;;
            esac
            shift 2
            ;;
          *) die "${EXIT_USAGE}" "deploy: unknown argument '$1' (valid: --tag, --provider-tag, --gateway-tag)" ;;
        esac
      done
      [[ -n ${req_provider} ]] || req_provider=${req_tag}
      [[ -n ${req_gateway} ]] || req_gateway=${req_tag}
      [[ -n ${req_provider}${req_gateway} ]] || die "${EXIT_USAGE}" "deploy needs --tag, --provider-tag or --gateway-tag"
      [[ -z ${req_provider} ]] || need_tag "provider tag" "${req_provider}"
      [[ -z ${req_gateway} ]] || need_tag "gateway tag" "${req_gateway}"
      ;;
    rollback)
      while (($#)); do
        case $1 in
          --previous) rollback_mode=previous && shift ;;
          --to)
            (($# >= 2)) || die "${EXIT_USAGE}" "--to needs a tag, e.g. sha-1a2b3c4"
            rollback_mode=to rollback_to=$2
            shift 2
            ;;
          # One target per service: each pinned to its own verified digest (TAG@sha256:...).
          --to-provider | --to-gateway)
            (($# >= 2)) || die "${EXIT_USAGE}" "$1 needs a tag, e.g. sha-1a2b3c4"
            rollback_mode=to
            if [[ $1 == --to-provider ]]; then rollback_to_p=$2; else rollback_to_g=$2; fi
            shift 2
            ;;
          *) die "${EXIT_USAGE}" "rollback: unknown argument '$1' (valid: --previous, --to TAG, --to-provider TAG --to-gateway TAG)" ;;
        esac
      done
      [[ -n ${rollback_mode} ]] || die "${EXIT_USAGE}" "rollback needs --previous or --to TAG"
      if [[ -n ${rollback_to_p}${rollback_to_g} ]]; then
        [[ -z ${rollback_to} && -n ${rollback_to_p} && -n ${rollback_to_g} ]] ||
          die "${EXIT_USAGE}" "rollback: --to-provider and --to-gateway go together, instead of --to"
      else
        rollback_to_p=${rollback_to} rollback_to_g=${rollback_to}
      fi
      [[ ${rollback_mode} != to ]] || need_tag "rollback --to" "${rollback_to_p}"
      [[ ${rollback_mode} != to ]] || need_tag "rollback --to" "${rollback_to_g}"
      ;;
    status | secret)
      (($# == 0)) || die "${EXIT_USAGE}" "${command} takes no arguments (got '$1')"
      ;;
    attach)
      while (($#)); do
        case $1 in
          --run)
            (($# >= 2)) || die "${EXIT_USAGE}" "--run needs a run id"
            attach_run=$2
            shift 2
            ;;
          *) die "${EXIT_USAGE}" "attach: unknown argument '$1' (valid: --run RUN)" ;;
        esac
      done
      [[ -z ${attach_run} || ${attach_run} =~ ${NAME_RE} ]] || die "${EXIT_USAGE}" "attach --run '${attach_run}' is not a run id"
      ;;
    *) die "${EXIT_USAGE}" "unknown command '${command}' (valid: deploy, rollback, status, attach, secret)" ;;
  esac
  need_uint --wait-timeout "${wait_timeout}"
  need_uint --keep "${keep}"
  [[ -z ${run_id} || ${run_id} =~ ${NAME_RE} ]] || die "${EXIT_USAGE}" "--run-id '${run_id}' is not valid (letters, digits, '_', '.', '-'; at most 128)"
  [[ ${signature} == verified || ${signature} == unsigned ]] ||
    die "${EXIT_USAGE}" "--signature '${signature}' is not one of: verified, unsigned"
  [[ -z ${commit_p} || ${commit_p} =~ ${COMMIT_RE} ]] || die "${EXIT_USAGE}" "--provider-commit '${commit_p}' is not a commit (7 to 64 lowercase hex digits)"
  [[ -z ${commit_g} || ${commit_g} =~ ${COMMIT_RE} ]] || die "${EXIT_USAGE}" "--gateway-commit '${commit_g}' is not a commit (7 to 64 lowercase hex digits)"
  if [[ -n ${registry_user} ]]; then
    [[ ! ${registry_user} =~ ${REGISTRY_USER_BAD_RE} ]] || die "${EXIT_USAGE}" "--registry-user '${registry_user}' is not a valid registry user name (a non-empty name without spaces or control characters)"
    [[ -n ${registry} ]] || die "${EXIT_USAGE}" "--registry-user needs --registry HOST: the registry the token is for (it is sent nowhere else)"
  fi
  [[ -z ${registry} || ${registry} =~ ${REGISTRY_RE} ]] || die "${EXIT_USAGE}" "--registry '${registry}' is not a registry host[:port]"
  case ${command} in
    deploy) action=deploy ;;
    rollback) action=rollback-${rollback_mode} ;;
    *) action=${command} ;;
  esac
  action_label=${action}
}

# resolve_dir: the deploy directory, physical and absolute.
resolve_dir() {
  if [[ -z ${dir} ]]; then
    dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
  fi
  [[ -d ${dir} ]] || die "${EXIT_USAGE}" "deploy directory '${dir}' does not exist"
  set_dir "$(cd -- "${dir}" && pwd -P)"
}

# staged_check STAGED INCOMING: the canonical path of STAGED when it is a staging directory
# INCOMING/<name> (a real directory, not a symlink, holding no deploy directory's own files);
# fails otherwise. Only such a directory is ever removed.
staged_check() {
  local name=${1%/} parent
  name=${name##*/}
  parent=$(cd -- "$(dirname -- "${1%/}")" 2>/dev/null && pwd -P) || return 1
  [[ ${parent} == "$2" && ${name} =~ ${NAME_RE} && ! -L ${1%/} && -d $1 ]] || return 1
  [[ ! -e $1/.env && ! -e $1/deployments.log && ! -e $1/.deploy-state ]] || return 1
  printf '%s' "$2/${name}"
}

# validate_staged: --staged must be a fresh staging directory of this deploy directory, never
# the directory itself or anything else (it is removed when the run ends).
validate_staged() {
  [[ -n ${staged} ]] || return 0
  local canonical
  if ! canonical=$(staged_check "${staged}" "${incoming_dir}"); then
    staged=""
    die "${EXIT_USAGE}" "--staged must be a staging directory ${incoming_dir}/<run> holding a shipped bundle (got '${orig_staged}'); nothing was removed"
  fi
  staged=${canonical}
  if [[ ! -f ${staged}/compose.yml || ! -f ${staged}/deploy/${SCRIPT_NAME} ]]; then
    die "${EXIT_USAGE}" "--staged '${orig_staged}' does not hold compose.yml and deploy/${SCRIPT_NAME}"
  fi
}

# ---------------------------------------------------------------------------------------------
# status (read-only: it takes no lock and changes nothing).

cmd_status() {
  local code=0 svc ref state digest line who="" pinned_p pinned_g expected_p="" expected_g=""
  echo "directory: ${dir}"
  if ! detect_compose; then
    echo "compose:   ${problem}"
    return "${EXIT_ATTENTION}"
  fi
  echo "compose:   v${compose_v}"
  if ! env_scan "${env_file}" || ! env_check_pins; then
    echo "pinned:    cannot read ${env_file}: ${problem}"
    code=${EXIT_ATTENTION}
  fi
  pinned_p=${env_val[${PROVIDER_VAR}]} pinned_g=${env_val[${GATEWAY_VAR}]}
  echo "pinned:    ${PROVIDER_SERVICE}=${pinned_p:-<unpinned: latest>} ${GATEWAY_SERVICE}=${pinned_g:-<unpinned: latest>}"
  for line in "${PROVIDER_VAR}" "${GATEWAY_VAR}"; do
    ((env_count[${line}] <= 1)) || echo "note:      ${env_file} assigns ${line} ${env_count[${line}]} times; the last one (line $((env_idx[${line}] + 1))) counts"
  done
  echo "secret:    $(secret_source)"
  if [[ -f ${holder_file} ]]; then who=$(holder_describe_now); fi
  [[ -z ${who} ]] || echo "deploying: ${who}"
  observe
  if [[ -f ${dir}/compose.yml ]] && images_of "${dir}/compose.yml" "${pinned_p}" "${pinned_g}" 2>/dev/null; then
    expected_p=${img_p} expected_g=${img_g}
  fi
  history_scan
  for svc in "${PROVIDER_SERVICE}" "${GATEWAY_SERVICE}"; do
    if [[ ${svc} == "${PROVIDER_SERVICE}" ]]; then ref=${run_ref_p} state=${run_state_p}; else ref=${run_ref_g} state=${run_state_g}; fi
    digest=""
    [[ -z ${ref} ]] || digest=$(image_digest "${ref}" || docker image inspect -f '{{.Id}}' "${ref}" 2>/dev/null || true)
    printf 'service:   %-17s %-10s %s\n' "${svc}" "${state}" "${ref:--}"
    if [[ -n ${digest} ]]; then
      printf '           digest %s%s\n' "${digest}" "$(deployed_by "${svc}" "${digest}")"
    fi
    [[ ${state} == healthy ]] || ((code)) || code=${EXIT_UNHEALTHY}
  done
  if intent_load "${intent_file}" && [[ -z ${who} ]]; then
    echo "interrupted: run ${i_run} (${i_action} ${i_from_provider:-none}/${i_from_gateway:-none} -> ${i_to_provider}/${i_to_gateway}, started ${i_started}, phase ${i_phase}) did not finish; the next deploy or rollback reconciles it"
    if [[ ${i_pid} =~ ^[0-9]+$ ]] && kill -0 -- "-${i_pid}" 2>/dev/null; then
      echo "             its processes (process group ${i_pid}) are still running"
    fi
    code=${EXIT_ATTENTION}
  fi
  if [[ -z ${who} ]]; then
    if [[ -n ${expected_p} && ${run_ref_p} != "${expected_p}" ]]; then
      echo "drift:     ${PROVIDER_SERVICE} runs ${run_ref_p:-nothing}, but ${env_file##*/} pins ${expected_p}"
      code=${EXIT_ATTENTION}
    fi
    if [[ -n ${expected_g} && ${run_ref_g} != "${expected_g}" ]]; then
      echo "drift:     ${GATEWAY_SERVICE} runs ${run_ref_g:-nothing}, but ${env_file##*/} pins ${expected_g}"
      code=${EXIT_ATTENTION}
    fi
  fi
  local last
  if last=$(run_latest); then
    run_files "${last}"
    if run_status_get; then
      if [[ ${run_code} == running ]]; then
        if proc_alive "${run_pid}" "${run_pid_start}"; then
          echo "last run:  ${last}: still running (pid ${run_pid}); attach --run ${last} follows it"
        else
          echo "last run:  ${last}: ended without recording an outcome (killed?)"
        fi
      else
        echo "last run:  ${last}: exit ${run_code}: ${run_msg}"
      fi
    fi
  fi
  for line in "${log_bad[@]}"; do echo "log:       ${log_file##*/} ${line}"; done
  if [[ -s ${log_file} ]]; then
    echo "last deployments (${log_file}):"
    tail -n 5 -- "${log_file}" | tr '\000' '?'
  fi
  return "${code}"
}

# The holder right now, without waiting (status must not block).
holder_describe_now() {
  local line
  { line=$(<"${holder_file}"); } 2>/dev/null || return 0
  if [[ ${line} =~ pid=([0-9]+)\ start=([0-9]*) ]] && proc_alive "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"; then
    printf '%s' "${line}"
  fi
}

# deployed_by SERVICE DIGEST: ", deployed by run R (line N): sha S, signature X" from the
# newest readable record whose digest for that service is DIGEST, and ", verified commit C"
# from the newest such record that verified it (a later deploy of the other service alone
# keeps this digest running without verifying it again).
deployed_by() {
  local svc=$1 digest=$2 n kind act res fp fg tp tg sha run bundle dp dg sig t cp cg found="" commit=""
  while IFS=$'\t' read -r n kind act res fp fg tp tg sha run bundle dp dg sig t cp cg; do
    [[ ${kind} == ok && (${res} == ok || ${res} == pin-failed) ]] || continue
    if [[ ${svc} == "${PROVIDER_SERVICE}" && ${dp} == "${digest}" ]] || [[ ${svc} == "${GATEWAY_SERVICE}" && ${dg} == "${digest}" ]]; then
      found=", deployed by run ${run} (log line ${n}): sha ${sha}, signature ${sig}"
      [[ ${svc} == "${PROVIDER_SERVICE}" ]] || cp=${cg}
      [[ ${cp:--} == - ]] || commit=${cp}
    fi
  done < <(log_records)
  printf '%s%s' "${found:-, in no log record}" "${commit:+, verified commit ${commit}}"
}

# ---------------------------------------------------------------------------------------------
# secret: make the gateways' session secret when it is missing (what a deploy does first), so a
# plain `docker compose up -d` works in a directory no deploy has run in yet. Prints the file's
# path, never its value. No lock: the secret is made with a link that never replaces one.

cmd_secret() {
  env_scan "${env_file}" || true
  secret_preflight || die "${EXIT_USAGE}" "${problem}; nothing was changed"
  secret_ensure || die "${EXIT_UNCHANGED}" "could not make ${secret_file} (disk full?); nothing was changed"
  [[ -z ${MCP_SESSION_SECRET:-}${env_all[MCP_SESSION_SECRET]:-} ]] ||
    log "note: ${env_file##*/} sets MCP_SESSION_SECRET, which the gateways use instead of this file"
  printf '%s\n' "${secret_file}"
}

# ---------------------------------------------------------------------------------------------
# attach: follow a run (by default the latest) until it ends; exits with its exit code.

cmd_attach() {
  local run=${attach_run}
  if [[ -z ${run} ]]; then
    run=$(run_latest) || die "${EXIT_USAGE}" "no run has been recorded in ${runs_dir}"
  fi
  run_files "${run}"
  [[ -f ${run_exit} ]] || die "${EXIT_USAGE}" "no run '${run}' in ${runs_dir}"
  run_id=${run}
  log "attached to run ${run} (${run_log})"
  follow_run
}

# ---------------------------------------------------------------------------------------------
# deploy / rollback, front half: start the detached worker and follow it.

front_start() {
  [[ -n ${run_id} ]] || run_id="$(date -u +%Y%m%dT%H%M%SZ)-$$"
  mkdir -p -- "${runs_dir}" || die "${EXIT_UNCHANGED}" "cannot create ${runs_dir}; nothing was changed"
  run_files "${run_id}"
  if ! (set -o noclobber && : >"${run_log}") 2>/dev/null; then
    die "${EXIT_USAGE}" "run id '${run_id}' was already used in ${dir} (${run_log}); a run id names one run"
  fi
  run_status_init || die "${EXIT_UNCHANGED}" "cannot write ${run_exit} (disk full?); nothing was changed"
  log "run ${run_id}: the deploy runs on the server detached from this connection; if the connection drops, 'status' or 'attach --run ${run_id}' shows how it ended"
  local -a argv=(--worker --run-id "${run_id}" "${orig_args[@]}")
  # The worker is not our child (setsid -f forks and its parent exits at once), so it is
  # reaped by init and its pid really disappears when it ends.
  if [[ -n ${registry_user} ]]; then
    setsid -f bash "${self}" "${argv[@]}" >>"${run_log}" 2>&1
  else
    setsid -f bash "${self}" "${argv[@]}" >>"${run_log}" 2>&1 </dev/null
  fi || die "${EXIT_UNCHANGED}" "could not start the detached worker (setsid -f, util-linux); nothing was changed"
  handed_over=1
  follow_run
}

# ---------------------------------------------------------------------------------------------
# deploy / rollback, worker half: the transaction, under the lock.

worker_main() {
  trap '' HUP PIPE
  trap worker_exit EXIT
  trap 'exit 143' TERM
  trap 'exit 130' INT
  run_files "${run_id}"
  registry_token=""
  if [[ -n ${registry_user} ]]; then
    IFS= read -r -t 60 registry_token || [[ -n ${registry_token} ]] ||
      die "${EXIT_USAGE}" "--registry-user ${registry_user} given, but no token arrived on stdin"
    registry_token=${registry_token%$'\r'}
  fi
  exec 0</dev/null
  printf 'running pid=%s start=%s\n' "$$" "$(proc_start $$)" 1<>"${run_exit}"
  mkdir -p -- "${state_dir}" || die "${EXIT_UNCHANGED}" "cannot create ${state_dir}; nothing was changed"
  exec 9>>"${lock_file}" || die "${EXIT_UNCHANGED}" "cannot open ${lock_file}; nothing was changed"
  if ! flock -n 9; then
    die "${EXIT_LOCKED}" "another deploy is running in ${dir}: $(holder_describe); nothing was changed"
  fi
  holder_write || die "${EXIT_UNCHANGED}" "cannot write ${holder_file} (disk full?); nothing was changed"
  have_lock=1
  # Inside, fd 9 is closed: no child (docker compose, sleep, ...) inherits the lock, so a
  # leftover child of a killed run cannot hold it. Bash keeps its own close-on-exec copy.
  transaction 9>&-
}

worker_exit() {
  local code=$?
  trap - EXIT
  if [[ -z ${final_code:-} ]]; then
    final_code=${EXIT_ATTENTION}
    final_msg="the server-side run stopped unexpectedly (exit ${code}) in phase ${phase:-start}; the next deploy or rollback reconciles it; running now: $(now_running)"
    log "error: ${final_msg}"
  fi
  # Everything this run leaves is settled before its outcome is published (the front returns
  # as soon as it sees it).
  if [[ -n ${staged} ]]; then rm -rf -- "${staged}"; fi
  if ((${have_lock:-0})); then rm -f -- "${holder_file}"; fi
  run_status_set "${final_code}" "${final_msg}" 2>/dev/null
  exit "${final_code}"
}

# reconcile: finish the books of an interrupted run (the intent of a run that no longer holds
# the lock): stop its leftover processes, repair a half-done bundle switch, record it.
reconcile() {
  intent_load "${intent_file}" || return 0
  log "found an interrupted run: ${i_run} (${i_action} ${i_from_provider:-none}/${i_from_gateway:-none} -> ${i_to_provider}/${i_to_gateway}, started ${i_started}, phase ${i_phase})"
  if [[ ${i_pid} =~ ^[0-9]+$ ]] && kill -0 -- "-${i_pid}" 2>/dev/null; then
    log "stopping its leftover processes (process group ${i_pid})"
    kill -TERM -- "-${i_pid}" 2>/dev/null || true
    local t
    for ((t = 0; t < 50; t++)); do
      kill -0 -- "-${i_pid}" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL -- "-${i_pid}" 2>/dev/null || true
  fi
  if [[ -n ${i_displaced} && -d ${i_displaced} && ${i_displaced} == "${state_dir}/"* ]]; then
    if bundle_half_switched; then
      log "its bundle switch was half done: putting the previous bundle back"
      bundle_restore "${i_displaced}" "$([[ -n ${i_from_bundle} ]] && echo 1 || echo 0)" ||
        die "${EXIT_ATTENTION}" "could not restore the bundle of interrupted run ${i_run} from ${i_displaced}; fix ${dir} by hand"
    fi
    rm -rf -- "${i_displaced}"
  fi
  if [[ -n ${i_staged} && ${i_staged} == "${incoming_dir}/"* && ${i_staged} != "${staged}" ]]; then
    rm -rf -- "${i_staged}"
  fi
  local s_action=${action} s_run=${run_id} s_from_p=${from_p:-} s_from_g=${from_g:-} s_to_p=${to_p:-}
  local s_to_g=${to_g:-} s_to_bundle=${to_bundle:-} s_sha=${sha:-} s_dig_p=${dig_p:-} s_dig_g=${dig_g:-}
  local s_started=${started} s_commit_p=${commit_p:-} s_commit_g=${commit_g:-}
  action=${i_action} run_id=${i_run} from_p=${i_from_provider} from_g=${i_from_gateway}
  to_p=${i_to_provider} to_g=${i_to_gateway} to_bundle=${i_to_bundle} sha="" dig_p="" dig_g=""
  commit_p="" commit_g=""
  started=$(now_s)
  if [[ ${LOG_ACTIONS} == *" ${action} "* ]] && valid_tag "${to_p}" && valid_tag "${to_g}"; then
    record interrupted || die "${EXIT_UNCHANGED}" "cannot record interrupted run ${i_run} in ${log_file} (disk full?); nothing was changed"
  fi
  action=${s_action} run_id=${s_run} from_p=${s_from_p} from_g=${s_from_g} to_p=${s_to_p} to_g=${s_to_g}
  to_bundle=${s_to_bundle} sha=${s_sha} dig_p=${s_dig_p} dig_g=${s_dig_g} started=${s_started}
  commit_p=${s_commit_p} commit_g=${s_commit_g}
  rm -f -- "${intent_file}"
  log "recorded run ${i_run} as interrupted; this run starts from what runs now"
}

# bundle_half_switched: did the interrupted run (the i_* intent) stop with a mix of two
# bundles installed? A file missing is one; so is any stop during the switch (the renames may
# have put the new deploy/ beside the old compose.yml) or during the automatic rollback, which
# was on its way back to the previous bundle. After a finished switch (phases up and pin) the
# new bundle is the one the running containers were started from: it stays.
bundle_half_switched() {
  [[ -f ${dir}/compose.yml && -d ${dir}/deploy ]] || return 0
  [[ ${i_phase} != switch ]] || return 0
  [[ ${i_phase} == rollback && -n ${i_from_bundle} ]]
}

# prune: images and bundles this directory's history no longer needs, and old run files.
prune() {
  local svc tag repo ref users
  local -a plan=()
  mapfile -t plan < <(prune_plan "${keep}" "${to_p}" "${to_g}" "${from_p}" "${from_g}")
  for ref in "${plan[@]}"; do
    read -r svc tag <<<"${ref}"
    if [[ ${svc} == provider ]]; then repo=$(ref_repo "${img_p}"); else repo=$(ref_repo "${img_g}"); fi
    if [[ ${tag} == *@* ]]; then ref="${repo}@${tag#*@}"; else ref="${repo}:${tag}"; fi
    docker image inspect "${ref}" >/dev/null 2>&1 || continue
    # Docker's own refusal (no --force) is not enough: an image with a second tag is untagged
    # even while a container of another deploy directory was created from this very tag.
    users=$(docker ps -a -q --filter "ancestor=${ref}" 2>/dev/null) || users="unknown (docker ps failed)"
    if [[ -n ${users} ]]; then
      log "kept ${ref}: a container on this host uses it"
      continue
    fi
    if docker image rm "${ref}" >/dev/null 2>&1; then
      log "pruned ${ref} (not among the last ${keep} deployments)"
    fi
  done
  local -A keep_b=([${to_bundle:-none}]=1 [${from_bundle:-none}]=1)
  local i b
  history_scan
  for ((i = ${#hist_b[@]} - 1; i >= 0 && i >= ${#hist_b[@]} - keep; i--)); do keep_b[${hist_b[i]}]=1; done
  if ((${#log_bad_lines[@]} == 0)); then
    for b in "${bundles_dir}"/*; do
      [[ -d ${b} && -z ${keep_b[${b##*/}]:-} ]] || continue
      rm -rf -- "${b}"
    done
  fi
  local -a runs=()
  mapfile -t runs < <(cd -- "${runs_dir}" && find . -maxdepth 1 -name '*.exit' -printf '%T@ %f\n' | sort -rn | tail -n +51 | cut -d ' ' -f 2)
  for b in "${runs[@]}"; do rm -f -- "${runs_dir}/${b}" "${runs_dir}/${b%.exit}.log"; done
}

transaction() {
  started=$(now_s)
  from_p="" from_g="" to_p="" to_g="" from_bundle="" to_bundle="" displaced="" sha="" dig_p="" dig_g=""
  phase=check
  local t next=""
  detect_compose || die "${EXIT_USAGE}" "${problem}"
  reconcile
  env_scan "${env_file}" || die "${EXIT_USAGE}" "${problem}; nothing was changed"
  if ((compose_v == 1)) && [[ -n ${MCP_SESSION_SECRET:-}${env_all[MCP_SESSION_SECRET]:-} ]]; then
    log "warning: Compose v1 cannot hand MCP_SESSION_SECRET from ${env_file##*/} to the gateways: they use ${secret_file} (with Compose v2 yours wins)"
  fi

  # 1. Where we start from: what runs (containers), not what .env says.
  env_check_pins || die "${EXIT_USAGE}" "${problem}"
  env_preflight || die "${EXIT_USAGE}" "${problem}; nothing was changed"
  secret_preflight || die "${EXIT_USAGE}" "${problem}; nothing was changed"
  observe
  [[ -z ${run_ref_p} ]] || from_p=$(ref_tag "${run_ref_p}")
  [[ -z ${run_ref_g} ]] || from_g=$(ref_tag "${run_ref_g}")
  if [[ -n ${from_p}${from_g} ]]; then
    [[ -n ${from_p} ]] || from_p=${env_val[${PROVIDER_VAR}]:-latest}
    [[ -n ${from_g} ]] || from_g=${env_val[${GATEWAY_VAR}]:-latest}
  else
    from_p=${env_val[${PROVIDER_VAR}]} from_g=${env_val[${GATEWAY_VAR}]}
  fi
  for t in "${from_p}" "${from_g}"; do
    [[ -z ${t} ]] || valid_tag "${t}" || die "${EXIT_USAGE}" "what runs now ('${t}') is not a tag this script can return to; fix the stack by hand first"
  done
  if [[ -n ${env_val[${PROVIDER_VAR}]}${env_val[${GATEWAY_VAR}]} && (${from_p} != "${env_val[${PROVIDER_VAR}]}" || ${from_g} != "${env_val[${GATEWAY_VAR}]}") ]]; then
    log "what runs (${PROVIDER_SERVICE}=${from_p:-none} ${GATEWAY_SERVICE}=${from_g:-none}) is not what ${env_file##*/} pins (${env_val[${PROVIDER_VAR}]:-none}/${env_val[${GATEWAY_VAR}]:-none}): starting from what runs"
  fi
  local had_bundle=0
  if from_bundle=$(bundle_id "${dir}"); then had_bundle=1; else from_bundle=""; fi

  # 2. Where we go: the tags, and the bundle that comes with them.
  case ${action} in
    deploy)
      to_p=${req_provider:-${from_p}} to_g=${req_gateway:-${from_g}}
      [[ -n ${to_p} && -n ${to_g} ]] || die "${EXIT_USAGE}" "nothing runs or is pinned yet in ${dir}: the first deploy needs both tags (--tag)"
      [[ -z ${staged} ]] || next=${staged}
      ;;
    rollback-to)
      to_p=${rollback_to_p} to_g=${rollback_to_g}
      [[ -z ${staged} ]] || next=${staged}
      ;;
    rollback-previous)
      previous_target "${from_p}" "${from_g}" || die "${EXIT_USAGE}" "${problem}"
      to_p=${tgt_p} to_g=${tgt_g}
      if [[ -n ${tgt_b} && -d ${bundles_dir}/${tgt_b} ]]; then
        log "returning to the bundle deployed with it (${tgt_b}, log line ${tgt_line})"
        next="${state_dir}/next-${run_id}"
      elif [[ -n ${staged} ]]; then
        next=${staged}
      fi
      ;;
  esac
  if [[ -n ${next} && ${next} == "${staged}" ]]; then
    to_bundle=$(bundle_id "${next}") || die "${EXIT_USAGE}" "the shipped bundle in ${staged} has no compose.yml"
  elif [[ -n ${next} ]]; then
    to_bundle=${tgt_b}
  else
    to_bundle=${from_bundle}
  fi
  [[ -n ${to_bundle} ]] || die "${EXIT_USAGE}" "no compose.yml in ${dir} and none shipped (--staged)"
  [[ ${to_bundle} != "${from_bundle}" ]] || next=""
  local target_file="${dir}/compose.yml"
  if [[ -n ${next} && ${next} == "${staged}" ]]; then target_file="${staged}/compose.yml"; fi
  if [[ -n ${next} && ${next} != "${staged}" ]]; then target_file="${bundles_dir}/${to_bundle}/compose.yml"; fi
  compose_files_check "$(dirname -- "${target_file}")" || die "${EXIT_USAGE}" "${problem}; nothing was changed"
  images_of "${target_file}" "${to_p}" "${to_g}" ||
    die "${EXIT_USAGE}" "the bundle's compose.yml (${to_bundle}) does not validate or does not name the ${PROVIDER_SERVICE} and ${GATEWAY_SERVICE} images (docker compose config failed); nothing was changed"
  local new_p_img=${img_p} new_g_img=${img_g}
  if [[ -n ${registry_user} ]]; then
    local img
    for img in "${new_p_img}" "${new_g_img}"; do
      if [[ $(registry_norm "$(ref_registry "${img}")") != "$(registry_norm "${registry}")" ]]; then
        die "${EXIT_USAGE}" "refusing to send the token for ${registry} to $(ref_registry "${img}"): the image ${img} is not on ${registry} (IMAGE_PREFIX in ${env_file##*/} names its registry); nothing was changed"
      fi
    done
  fi

  # 3. Before anything changes: keep both bundles, prepare the switch, record the intent.
  if [[ -n ${next} ]]; then
    displaced="${state_dir}/displaced-${run_id}"
    if ! prepare_switch "${next}" "${had_bundle}"; then
      done_with_intent
      die "${EXIT_UNCHANGED}" "cannot keep the bundles in ${bundles_dir} (disk full?); nothing was changed"
    fi
  fi
  phase=pull
  intent_write pull || die "${EXIT_UNCHANGED}" "cannot record the intent in ${intent_file} (disk full?); nothing was changed"
  log "${action}: ${PROVIDER_SERVICE} ${from_p:-none} -> ${to_p}, ${GATEWAY_SERVICE} ${from_g:-none} -> ${to_g}, bundle ${from_bundle:-none} -> ${to_bundle}"

  # 4. Log in and pull: nothing running is touched until both images are here.
  if [[ -n ${registry_user} ]]; then
    log "logging in to ${registry} as ${registry_user} (token from stdin)"
    if ! printf '%s\n' "${registry_token}" | docker login --username "${registry_user}" --password-stdin "${registry}" >/dev/null; then
      unchanged login-failed "registry login to ${registry} failed"
    fi
  fi
  local -a pull_services=("${PROVIDER_SERVICE}" "${GATEWAY_SERVICE}")
  local services
  # The proxy too, when the bundle has one: nothing may be fetched once the switch has begun.
  services=$(compose_at "${target_file}" "${to_p}" "${to_g}" config --services 2>/dev/null) || services=""
  [[ $'\n'${services}$'\n' != *$'\n'"${ROLLOUT_PROXY}"$'\n'* ]] || pull_services+=("${ROLLOUT_PROXY}")
  log "pulling ${new_p_img} and ${new_g_img}"
  if ! compose_at "${target_file}" "${to_p}" "${to_g}" pull "${pull_services[@]}"; then
    unchanged pull-failed "pull failed (tag missing, registry down or no access)"
  fi
  dig_p=$(image_digest "${new_p_img}") || dig_p=""
  dig_g=$(image_digest "${new_g_img}") || dig_g=""
  sha=""
  [[ $(tag_name "${to_p}") != sha-* ]] || sha=$(tag_name "${to_p}")
  sha=${sha#sha-}
  [[ -n ${sha} ]] || sha=$(revision_of "${new_p_img}")

  # 5. Switch the bundle (renames only) and bring the new version up, gated on health. The
  # session secret is made first (once per directory), the last step that can still fail with
  # nothing changed.
  secret_ensure || unchanged switch-failed "could not make the gateways' session secret ${secret_file} (disk full?)"
  phase=switch
  intent_phase switch
  if [[ -n ${next} ]] && ! bundle_switch "${next}" "${displaced}"; then
    bundle_restore "${displaced}" "${had_bundle}" || true
    unchanged switch-failed "could not install the bundle in ${dir}"
  fi
  phase=up
  intent_phase up
  log "starting ${to_p}/${to_g} and waiting up to ${wait_timeout}s for health"
  if bring_up "${to_p}" "${to_g}"; then
    # 6. Pin and record: a reboot or a manual `docker compose up -d` now keeps this version.
    phase=pin
    intent_phase pin
    local result=ok problems=""
    if ! env_pin "${to_p}" "${to_g}"; then
      result=pin-failed
      problems=".env could not be rewritten (it still pins ${env_val[${PROVIDER_VAR}]:-nothing}/${env_val[${GATEWAY_VAR}]:-nothing})"
    fi
    record "${result}" || problems+="${problems:+, and }deployments.log could not record it"
    done_with_intent
    if [[ -n ${problems} ]]; then
      finish "${EXIT_UNRECORDED}" "${action}: ${PROVIDER_SERVICE}=${to_p} ${GATEWAY_SERVICE}=${to_g} is healthy and serving, but ${problems} (disk full?); free space and run 'deploy --tag ...' with the same tags again to pin and record it; running now: $(running_summary)"
    fi
    prune
    finish "${EXIT_OK}" "${action} ok: ${PROVIDER_SERVICE}=${to_p} ${GATEWAY_SERVICE}=${to_g} healthy and pinned in ${env_file} ($(elapsed "${started}")s)"
  fi

  # 7. Unhealthy: back to what ran before, bundle and tags.
  phase=rollback
  intent_phase rollback
  log "${to_p}/${to_g} did not become healthy within ${wait_timeout}s; rolling back"
  compose_with "${to_p}" "${to_g}" ps >&2 || true
  if [[ -z ${from_p}${from_g} ]]; then
    compose_with "${to_p}" "${to_g}" down >&2 || true
    if [[ -n ${displaced} ]]; then bundle_restore "${displaced}" "${had_bundle}" || true; fi
    record unhealthy-rolled-back || log "warning: deployments.log could not record it"
    done_with_intent
    finish "${EXIT_ROLLED_BACK}" "${action} failed: ${to_p}/${to_g} unhealthy; rolled back to the previous state: nothing was running, so the stack is stopped and ${env_file##*/} is unchanged"
  fi
  local restored=1
  if [[ -n ${displaced} ]]; then
    bundle_restore "${displaced}" "${had_bundle}" || restored=0
  fi
  log "rolling back to ${PROVIDER_SERVICE}=${from_p} ${GATEWAY_SERVICE}=${from_g} (bundle ${from_bundle:-none})"
  if ((restored)) && bring_up "${from_p}" "${from_g}"; then
    local problems=""
    env_pin "${from_p}" "${from_g}" || problems=".env could not be rewritten to what runs"
    record unhealthy-rolled-back || problems+="${problems:+, and }deployments.log could not record it"
    done_with_intent
    if [[ -n ${problems} ]]; then
      finish "${EXIT_UNRECORDED}" "${action} failed: ${to_p}/${to_g} unhealthy; rolled back to ${from_p}/${from_g}, which is healthy, but ${problems}; running now: $(running_summary)"
    fi
    finish "${EXIT_ROLLED_BACK}" "${action} failed: ${to_p}/${to_g} did not become healthy; rolled back to ${PROVIDER_SERVICE}=${from_p} ${GATEWAY_SERVICE}=${from_g} (bundle ${from_bundle:-none}), which is healthy again"
  fi
  record unhealthy-restore-failed || log "warning: deployments.log could not record it"
  done_with_intent
  finish "${EXIT_RESTORE_FAILED}" "${action} failed: ${to_p}/${to_g} unhealthy AND the rollback to ${from_p}/${from_g} did not become healthy either; running now: $(running_summary); check 'docker compose ps' and the logs in ${dir}"
}

# prepare_switch NEXT HAD_BUNDLE: before anything changes, keep both bundles in the store and
# make NEXT (the bundle to install, on this filesystem) and the directory the installed one
# will be moved to, so the switch and its undo are renames only.
prepare_switch() {
  local next=$1 had=$2
  mkdir -p -- "${bundles_dir}" || return 1
  if ((had)); then bundle_store "${dir}" "${from_bundle}" || return 1; fi
  if [[ ${next} == "${staged}" ]]; then
    bundle_store "${staged}" "${to_bundle}" || return 1
  else
    rm -rf -- "${next}" && cp -Rp -- "${bundles_dir}/${to_bundle}" "${next}" || return 1
  fi
  mkdir -p -- "${displaced}"
}

# done_with_intent: the run's outcome is recorded (or cannot be): drop the intent and the
# switch's working directories.
done_with_intent() {
  rm -f -- "${intent_file}"
  [[ -z ${displaced} ]] || rm -rf -- "${displaced}"
  [[ ${next:-} != "${state_dir}/next-${run_id}" ]] || rm -rf -- "${next}"
}

# unchanged RESULT WHAT: a failure before the switch: record it, drop the intent, exit 3.
unchanged() {
  record "$1" || log "warning: deployments.log could not record it"
  done_with_intent
  finish "${EXIT_UNCHANGED}" "$2; nothing was changed; running now: $(running_summary)"
}

# The staging directory is single-use: removed when a command ends (a refused one too), unless
# a worker took it over. Checked again here: an argument error can end the command before
# validate_staged ran.
front_exit() {
  local code=$? d=${dir:-} canonical
  if ((handed_over == 0)) && [[ -n ${staged:-} ]]; then
    [[ -n ${d} ]] || d=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
    d=$(cd -- "${d}" 2>/dev/null && pwd -P) && canonical=$(staged_check "${staged}" "${d}/.incoming") &&
      rm -rf -- "${canonical}"
  fi
  exit "${code}"
}

# ---------------------------------------------------------------------------------------------

main() {
  set -uo pipefail
  export LC_ALL=C
  self=$(readlink -f -- "${BASH_SOURCE[0]}")
  handed_over=0 have_lock=0 final_code="" staged="" dir=""
  trap front_exit EXIT
  parse_args "$@"
  orig_staged=${staged}
  resolve_dir
  validate_staged
  # Values exported in the calling shell would override .env inside Compose; the tags must come
  # from .env or from this script only.
  unset "${PROVIDER_VAR}" "${GATEWAY_VAR}"
  # The worker takes over the staging directory (and removes it when it ends); it never returns.
  ((worker == 0)) || worker_main
  case ${command} in
    status) cmd_status ;;
    attach) cmd_attach ;;
    secret) cmd_secret ;;
    *) front_start ;;
  esac
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
fi
