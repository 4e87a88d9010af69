# shellcheck shell=bash
# rollout.sh: replace the containers of the stack's services without a gap in service.
# Sourced by mcp-trader-deploy.sh (functions only; nothing runs when it is sourced).
#
# The method is docker-rollout's, under plain Compose: for each service, start ONE more
# container with the new configuration next to the running one (`up -d --no-recreate --scale
# N+1`), wait until Docker reports it healthy and, for the gateway, until the proxy sends it
# traffic; then retire each old container: out of the proxy's rotation first (HAProxy runtime
# API, `set server ... state maint`), its in-flight requests finished, then `docker stop` (the
# service's own drain runs on SIGTERM, bounded by its stop_grace_period) and `docker rm`.
# A new container that never becomes healthy is removed again: the old one never stopped
# serving, so a bad version costs no request.
#
# - binance-provider: old and new overlap the same way. The gateway reaches the provider by its
#   service name, which Docker's DNS resolves to every provider container; when the old one
#   drains (NOT_SERVING, then GOAWAY) the gateway's channel reconnects to the new one, and the
#   gateway retries a read-only call that failed with UNAVAILABLE (mcp-gateway/README.md).
# - mcp-gateway: the proxy (deploy/proxy/haproxy.cfg) finds both containers by DNS and
#   health-checks them; this script waits until the proxy reports the new one UP before it
#   takes the old one out of rotation.
# - proxy: brought up with `up -d --no-deps`, so it is recreated only when its own definition in
#   compose.yml changes (a new pinned image or port: about a second of refused connections).
#   Without a `proxy` service in compose.yml (or with it disabled by deploy/compose.no-proxy.yml)
#   the gateway is replaced in place (a restart's gap).
#
# Needs from the sourcing script: log MESSAGE, compose_with PROVIDER_TAG GATEWAY_TAG ARGS...,
# and the variables compose_v (1 or 2) and wait_timeout (seconds).

# compose_v and wait_timeout are set by the sourcing script.
# shellcheck disable=SC2154
readonly ROLLOUT_PROXY=proxy
# The proxy's names for things, as deploy/proxy/haproxy.cfg declares them.
readonly ROLLOUT_PROXY_BACKEND=gateway
# The runtime API's address inside the proxy container (its `stats socket`).
readonly ROLLOUT_PROXY_API_PORT=8406
# How long a gateway taken out of rotation may finish its requests before SIGTERM. Short: after
# SIGTERM the gateway itself finishes what is in flight (GATEWAY_SHUTDOWN_GRACE_SECONDS) and
# closes its open GET streams, which would otherwise keep this wait busy for nothing.
readonly ROLLOUT_DRAIN_WAIT=2
# How long a retired gateway's slot may wait for the proxy's DNS to drop its address (the proxy
# resolves every second: deploy/proxy/haproxy.cfg).
readonly ROLLOUT_DNS_WAIT=5

# rollout_ids P G SERVICE: ids of the service's containers, running or not, one per line.
rollout_ids() {
  if ((compose_v == 2)); then
    compose_with "$1" "$2" ps -a -q "$3" 2>/dev/null
  else
    compose_with "$1" "$2" ps -q "$3" 2>/dev/null
  fi
}

# rollout_state ID: healthy, unhealthy, starting (Docker health), or the container's status
# when it has no healthcheck or is not running (running, exited, dead, ...); "missing" if gone.
rollout_state() {
  local state
  state=$(docker inspect -f '{{if and (eq .State.Status "running") .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$1" 2>/dev/null) || state=missing
  printf '%s' "${state:-missing}"
}

# rollout_hash ID: the Compose configuration hash a container was created with.
rollout_hash() {
  docker inspect -f '{{index .Config.Labels "com.docker.compose.config-hash"}}' "$1" 2>/dev/null || true
}

# rollout_expected_hash P G SERVICE: the hash Compose gives the service's configuration now.
rollout_expected_hash() {
  if ((compose_v == 2)); then
    compose_with "$1" "$2" config --hash "$3" 2>/dev/null | awk -v s="$3" '$1 == s { print $2 }'
  else
    compose_with "$1" "$2" config --hash="$3" 2>/dev/null | awk -v s="$3" '$1 == s { print $2 }'
  fi
}

# rollout_ip ID: the container's address on the stack's network.
rollout_ip() {
  docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$1" 2>/dev/null | awk '{ print $1 }'
}

# rollout_wait_healthy ID DEADLINE(SECONDS value): 0 once healthy (or running, for a service
# without a healthcheck); 1 as soon as it is unhealthy, has exited, or DEADLINE passes.
rollout_wait_healthy() {
  local id=$1 deadline=$2 state
  while :; do
    state=$(rollout_state "${id}")
    case ${state} in
      healthy | running) return 0 ;;
      starting | created | restarting) ;;
      *)
        log "container ${id:0:12} is ${state}"
        return 1
        ;;
    esac
    if ((SECONDS >= deadline)); then
      log "container ${id:0:12} is still ${state} after ${wait_timeout}s"
      return 1
    fi
    sleep 0.5
  done
}

# rollout_retire ID...: stop (SIGTERM, then the container's own stop timeout, i.e. the
# service's stop_grace_period) and remove containers.
rollout_retire() {
  (($#)) || return 0
  docker stop "$@" >/dev/null 2>&1 || true
  docker rm -f "$@" >/dev/null 2>&1 || true
}

# --- the proxy's runtime API (reached with `docker exec`; never published) -------------------

# proxy_id P G: the running proxy container, or nothing.
proxy_id() {
  local id
  for id in $(rollout_ids "$1" "$2" "${ROLLOUT_PROXY}"); do
    if [[ $(rollout_state "${id}") != exited && $(rollout_state "${id}") != missing ]]; then
      printf '%s' "${id}"
      return 0
    fi
  done
}

# proxy_api PROXY_ID COMMAND: one runtime API command, its answer on stdout. HAProxy answers one
# command and closes the connection; bash inside the container does the TCP (no socat there).
proxy_api() {
  # shellcheck disable=SC2016 # expanded by the bash in the container
  timeout 10 docker exec "$1" bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "%s\n" "$2" >&3 && cat <&3' \
    proxy-api "${ROLLOUT_PROXY_API_PORT}" "$2"
}

# proxy_servers PROXY_ID: "slot address operational_state admin_state" per gateway slot
# (`show servers state`: op state 2 = running; admin state 0 = in rotation).
proxy_servers() {
  proxy_api "$1" "show servers state ${ROLLOUT_PROXY_BACKEND}" | awk 'NR > 2 && NF >= 7 { print $4, $5, $6, $7 }'
}

# proxy_slot PROXY_ID IP: the server slot the proxy gave to that address, or nothing.
proxy_slot() {
  proxy_servers "$1" | awk -v ip="$2" '$2 == ip && !found { print $1; found = 1 }'
}

# proxy_wait_up PROXY_ID IP DEADLINE: 0 once the proxy routes to that address (UP, in rotation).
proxy_wait_up() {
  local proxy=$1 ip=$2 deadline=$3
  while :; do
    if proxy_servers "${proxy}" | awk -v ip="${ip}" '$2 == ip && $3 == 2 && $4 == 0 { f = 1 } END { exit !f }'; then
      return 0
    fi
    if ((SECONDS >= deadline)); then
      log "the proxy did not route to the new gateway (${ip}) within ${wait_timeout}s"
      return 1
    fi
    sleep 0.25
  done
}

# proxy_release_all PROXY_ID [GONE_IP...]: every slot back in rotation (its health checks decide).
# A run that was interrupted after taking a gateway out must not leave its slot out for the next
# container Docker's DNS hands it to. A slot that still holds the address of a container just
# removed (GONE_IP) waits until the proxy's DNS has dropped that address, at most
# ROLLOUT_DNS_WAIT seconds: back in rotation too early, the proxy would dial a vanished address
# and every request sent there would hang until `timeout connect` before being redispatched.
proxy_release_all() {
  local proxy=$1 slot deadline=$((SECONDS + ROLLOUT_DNS_WAIT))
  shift
  for slot in $(proxy_servers "${proxy}" | awk '$4 % 2 == 1 { print $1 }'); do
    while (($#)) && ((SECONDS < deadline)) && proxy_slot_holds "${proxy}" "${slot}" "$@"; do
      sleep 0.25
    done
    proxy_api "${proxy}" "set server ${ROLLOUT_PROXY_BACKEND}/${slot} state ready" >/dev/null || true
  done
}

# proxy_slot_holds PROXY_ID SLOT IP...: whether the slot's address is one of the IPs.
proxy_slot_holds() {
  local proxy=$1 slot=$2 addr
  shift 2
  addr=$(proxy_servers "${proxy}" | awk -v s="${slot}" '$1 == s { print $2 }')
  [[ -n ${addr} && " $* " == *" ${addr} "* ]]
}

# proxy_drain PROXY_ID IP BOUND_SECONDS: take that gateway out of rotation (no new request goes
# to it; requests in flight go on), then wait up to BOUND until none is in flight. Its slot goes
# back in rotation (proxy_release_all) once the container is gone.
proxy_drain() {
  local proxy=$1 ip=$2 bound=$3 slot deadline cur
  slot=$(proxy_slot "${proxy}" "${ip}")
  [[ -n ${slot} ]] || return 0
  proxy_api "${proxy}" "set server ${ROLLOUT_PROXY_BACKEND}/${slot} state maint" >/dev/null || return 0
  deadline=$((SECONDS + bound))
  while :; do
    # `show stat` CSV: field 2 is the slot, field 5 its requests in flight (scur).
    cur=$(proxy_api "${proxy}" "show stat ${ROLLOUT_PROXY_BACKEND} 4 -1" | awk -F, -v s="${slot}" '$2 == s { print $5 }')
    [[ ${cur:-0} == 0 ]] && break
    if ((SECONDS >= deadline)); then
      log "gateway ${ip}: ${cur} request(s) or stream(s) still open after ${bound}s; its own drain finishes them"
      break
    fi
    sleep 0.2
  done
}

# --- one service ---------------------------------------------------------------------------

# rollout_service P G SERVICE: make SERVICE run the configuration of tags P/G in exactly one
# healthy container, with no gap. 0 on success; 1 if the new container did not become healthy
# (or the proxy never routed to it), in which case it was removed and the old ones still serve.
rollout_service() {
  local p=$1 g=$2 svc=$3 want id state deadline new="" proxy="" ip
  local -a old=() keep=() ids=() gone=()
  deadline=$((SECONDS + wait_timeout))
  want=$(rollout_expected_hash "${p}" "${g}" "${svc}")
  [[ -n ${want} ]] || { log "compose.yml has no service ${svc}"; return 1; }
  mapfile -t ids < <(rollout_ids "${p}" "${g}" "${svc}")
  for id in "${ids[@]}"; do
    [[ -n ${id} ]] || continue
    state=$(rollout_state "${id}")
    case ${state} in
      exited | dead | created | missing)
        # Serves nothing; `--scale` would count (and could restart) it: remove it first.
        rollout_retire "${id}"
        ;;
      *)
        if [[ ${state} == healthy && $(rollout_hash "${id}") == "${want}" ]]; then
          keep+=("${id}")
        else
          old+=("${id}")
        fi
        ;;
    esac
  done
  if [[ ${svc} == "${GATEWAY_SERVICE}" ]]; then
    proxy=$(proxy_id "${p}" "${g}")
    [[ -z ${proxy} ]] || proxy_release_all "${proxy}"
  fi

  if ((${#keep[@]} > 0)); then
    # Already running this configuration (a redeploy, or a rollback to what still runs): keep
    # one, retire any other (e.g. left over by an interrupted run).
    new=${keep[0]}
    old+=("${keep[@]:1}")
    ((${#old[@]} == 0)) && return 0
    log "${svc}: ${new:0:12} already runs this configuration"
  else
    log "${svc}: starting a new container next to ${#old[@]} running"
    # No --no-deps: Compose drops depends_on from the configuration it hashes with --no-deps,
    # and a plain `docker compose up -d` would then recreate the container for nothing.
    # --no-recreate keeps the dependencies (already rolled out) and the old container as is.
    if ! compose_with "${p}" "${g}" up -d --no-recreate --scale "${svc}=$((${#old[@]} + 1))" "${svc}" >&2; then
      log "${svc}: compose could not start the new container"
      mapfile -t ids < <(rollout_ids "${p}" "${g}" "${svc}")
      for id in "${ids[@]}"; do
        [[ -z ${id} || " ${old[*]} " == *" ${id} "* ]] || rollout_retire "${id}"
      done
      return 1
    fi
    mapfile -t ids < <(rollout_ids "${p}" "${g}" "${svc}")
    for id in "${ids[@]}"; do
      [[ -z ${id} || " ${old[*]} " == *" ${id} "* ]] || new=${id}
    done
    [[ -n ${new} ]] || { log "${svc}: compose started no new container"; return 1; }
    if ! rollout_wait_healthy "${new}" "${deadline}"; then
      docker logs --tail 20 "${new}" >&2 2>&1 || true
      rollout_retire "${new}"
      log "${svc}: the new container was removed; the running one was never touched"
      return 1
    fi
  fi

  if [[ -n ${proxy} ]]; then
    ip=$(rollout_ip "${new}")
    if ! proxy_wait_up "${proxy}" "${ip}" "${deadline}"; then
      [[ -n ${keep[*]} ]] || rollout_retire "${new}"
      return 1
    fi
  fi
  for id in "${old[@]}"; do
    if [[ -n ${proxy} ]]; then
      ip=$(rollout_ip "${id}")
      gone+=("${ip}")
      proxy_drain "${proxy}" "${ip}" "${ROLLOUT_DRAIN_WAIT}"
    fi
    log "${svc}: retiring ${id:0:12}"
    rollout_retire "${id}"
  done
  [[ -z ${proxy} ]] || proxy_release_all "${proxy}" "${gone[@]}"
  return 0
}

# rollout_has_proxy P G: whether compose.yml defines the proxy service.
rollout_has_proxy() {
  local services
  # Not `| grep -q`: grep would exit at the first match and, under pipefail, the pipeline
  # would fail on compose's SIGPIPE: the stack would then look proxy-less.
  services=$(compose_with "$1" "$2" config --services 2>/dev/null) || return 1
  [[ $'\n'${services}$'\n' == *$'\n'"${ROLLOUT_PROXY}"$'\n'* ]]
}

# rollout_stack P G: provider, then proxy, then gateway, each without a gap; then wait until the
# proxy itself is healthy. 0 when everything is healthy.
rollout_stack() {
  local p=$1 g=$2 gw proxy deadline
  rollout_service "${p}" "${g}" "${PROVIDER_SERVICE}" || return 1
  deadline=$((SECONDS + wait_timeout))
  if ! rollout_has_proxy "${p}" "${g}"; then
    # The gateway publishes its own port then: two containers cannot share it.
    log "the stack has no ${ROLLOUT_PROXY} service (none in compose.yml, or an override disables it): replacing ${GATEWAY_SERVICE} in place (its restart is a gap in service)"
    # A proxy left from a bundle that had one, or from before the override that disables it,
    # would hold the port. --remove-orphans removes the first only: Compose does not count a
    # service its profiles disable as an orphan, so that one is removed here.
    for proxy in $(rollout_ids "${p}" "${g}" "${ROLLOUT_PROXY}"); do
      log "removing the ${ROLLOUT_PROXY} container ${proxy:0:12}: the gateway publishes the port now"
      rollout_retire "${proxy}"
    done
    compose_with "${p}" "${g}" up -d --remove-orphans "${GATEWAY_SERVICE}" >&2 || return 1
    for gw in $(rollout_ids "${p}" "${g}" "${GATEWAY_SERVICE}"); do
      rollout_wait_healthy "${gw}" "${deadline}" || return 1
    done
    return 0
  fi
  # A gateway of a bundle without the proxy publishes the port itself: the proxy cannot bind it
  # while that one runs. Moving to the proxy costs that one restart's gap, once.
  for gw in $(rollout_ids "${p}" "${g}" "${GATEWAY_SERVICE}"); do
    if [[ -n $(docker inspect -f '{{range $k, $v := .HostConfig.PortBindings}}{{$k}}{{end}}' "${gw}" 2>/dev/null) ]]; then
      log "${GATEWAY_SERVICE} ${gw:0:12} publishes its port itself (a bundle without the proxy): stopping it so the proxy can take the port"
      rollout_retire "${gw}"
    fi
  done
  compose_with "${p}" "${g}" up -d --no-deps --remove-orphans "${ROLLOUT_PROXY}" >&2 || return 1
  rollout_service "${p}" "${g}" "${GATEWAY_SERVICE}" || return 1
  proxy=$(proxy_id "${p}" "${g}")
  [[ -n ${proxy} ]] || { log "the ${ROLLOUT_PROXY} container is not running"; return 1; }
  rollout_wait_healthy "${proxy}" "${deadline}"
}
