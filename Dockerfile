# The relay in a small image: `docker build -t osaurus-relay .`, then
# `docker run -p 8080:8080 -e BASE_DOMAIN=agent.example.com osaurus-relay`.
# CI runs this file's `cargo build` line as it stands (.ci/run).
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p osaurus-relay

FROM debian:bookworm-slim
COPY --from=build /src/target/release/osaurus-relay /usr/local/bin/osaurus-relay
ENV PORT=8080 LOG_FORMAT=json
EXPOSE 8080
# Nobody: the relay needs no privileges and no files (TLS files, if any, mounted read-only).
USER 65534:65534
# Plain /health on PORT; with TLS_CERT set, probe METRICS_ADDR's /ready instead:
# `osaurus-relay health --url http://127.0.0.1:9090/ready`.
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/osaurus-relay", "health"]
# SIGTERM drains calls in flight (DRAIN_TIMEOUT, 20 s): give `docker stop -t 30`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/osaurus-relay"]
