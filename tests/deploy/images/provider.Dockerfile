# Test image of binance-provider: the real binary on a Debian bookworm minbase (the binary is
# glibc-linked), same name, port, user and healthcheck command as the published image.
ARG BASE
FROM ${BASE}
ARG VERSION
ARG REVISION
COPY binance-provider /usr/local/bin/binance-provider
LABEL org.opencontainers.image.title="binance-provider" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
ENV PROVIDER_ADDR=0.0.0.0:50053
EXPOSE 50053
USER 10001:10001
ENTRYPOINT ["binance-provider"]
