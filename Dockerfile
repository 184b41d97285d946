# Build stage: the Rust toolchain and the crate's dependencies.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
RUN cargo build --release --locked --bin uptimeo-agent

# Runtime stage: the binary and CA certificates only, as a non-root user.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates=* curl=* \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 uptimeo \
    && useradd --system --uid 10001 --gid 10001 --no-create-home uptimeo \
    && mkdir -p /var/lib/uptimeo-agent/spool \
    && chown -R 10001:10001 /var/lib/uptimeo-agent
COPY --from=build /src/target/release/uptimeo-agent /usr/local/bin/uptimeo-agent
USER 10001:10001
ENV HEALTH_PORT=8080 SPOOL_DIR=/var/lib/uptimeo-agent/spool
VOLUME /var/lib/uptimeo-agent/spool
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD ["sh", "-c", "curl -fsS \"http://127.0.0.1:${HEALTH_PORT}/healthz\" || exit 1"]
ENTRYPOINT ["/usr/local/bin/uptimeo-agent"]
CMD ["run"]
