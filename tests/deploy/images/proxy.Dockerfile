# Test image of the stack's proxy: Debian 12's HAProxy 2.6 LTS package (the same LTS branch as
# the official image compose.yml pins) on the bookworm minbase, laid out like the official image:
# config in /usr/local/etc/haproxy, runtime socket directory /var/lib/haproxy owned by the
# unprivileged haproxy user, socat for the runtime API, master-worker mode, SIGUSR1 soft stop.
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy socat \
 && rm -rf /var/lib/apt/lists/* \
 && chown haproxy:haproxy /var/lib/haproxy \
 && mkdir -p /usr/local/etc/haproxy \
 && haproxy -v
STOPSIGNAL SIGUSR1
USER haproxy
ENTRYPOINT ["haproxy", "-W", "-db"]
CMD ["-f", "/usr/local/etc/haproxy/haproxy.cfg"]
