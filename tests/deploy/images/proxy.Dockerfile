# Test image of the stack's proxy: Debian 12's HAProxy 2.6 LTS package (the same LTS branch as
# the official image compose.yml pins) on the bookworm minbase, laid out like the official image:
# config in /usr/local/etc/haproxy, /var/lib/haproxy owned by the unprivileged haproxy user,
# master-worker mode, SIGUSR1 soft stop, and no socat or curl (the official image has neither:
# the deploy script and the healthcheck must make do with bash).
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy \
 && rm -rf /var/lib/apt/lists/* \
 && chown haproxy:haproxy /var/lib/haproxy \
 && mkdir -p /usr/local/etc/haproxy \
 && haproxy -v
STOPSIGNAL SIGUSR1
USER haproxy
ENTRYPOINT ["haproxy", "-W", "-db"]
CMD ["-f", "/usr/local/etc/haproxy/haproxy.cfg"]
