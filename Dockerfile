# One image with every MindBus binary; compose.yaml picks the command.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bins --locked \
 && mkdir /out \
 && cp target/release/mindbus target/release/mindbus-agent target/release/mindbus-monitor \
    target/release/mindbus-orchestrator target/release/mindbus-gateway /out/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 mindbus
COPY --from=build /out/ /usr/local/bin/
COPY config/ /etc/mindbus/
USER mindbus
ENV MINDBUS_CONFIG=/etc/mindbus/mindbus.yaml
CMD ["mindbus", "--help"]
