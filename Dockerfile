# The relay in a small image: `docker build -t osaurus-relay .`, then
# `docker run -p 8080:8080 -e BASE_DOMAIN=agent.example.com osaurus-relay`.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p osaurus-relay

FROM debian:bookworm-slim
COPY --from=build /src/target/release/osaurus-relay /usr/local/bin/osaurus-relay
ENV PORT=8080 RUST_LOG=info
EXPOSE 8080
# Nobody: the relay needs no privileges and no files.
USER 65534:65534
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/osaurus-relay"]
