# Multi-stage build: the release binary on a slim Debian image with the pipelines,
# SQL, jobs and config it runs.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
RUN cargo build --release --locked && strip target/release/crm-marts

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /app crm \
    && mkdir -p /data/exports /var/tmp/crm-marts \
    && chown -R crm /data /var/tmp/crm-marts
WORKDIR /app
COPY --from=build /src/target/release/crm-marts /usr/local/bin/crm-marts
COPY pipelines ./pipelines
COPY sql ./sql
COPY jobs ./jobs
COPY config ./config
USER crm
ENV CRM_DATA_DIR=/data
VOLUME ["/data"]
# As a cluster: `scheduler` listens on 50050, `executor` on 50051 (Arrow Flight) and 50052 (gRPC).
EXPOSE 50050 50051 50052
ENTRYPOINT ["crm-marts"]
CMD ["--help"]
