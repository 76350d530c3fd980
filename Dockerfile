# preserve, for `preserve serve` on Kubernetes (deploy/kubernetes) or a one-shot `preserve snapshot` Job.
#   docker build -t preserve:0.1.0 .
# Build stage: the locked dependencies, release profile.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked && strip target/release/preserve

# Runtime: Debian slim (the `command` collectors run ps and df), no shell needed by preserve itself, non-root.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates procps \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin preserve \
 && install -d -o 10001 -g 10001 /evidence
COPY --from=build /src/target/release/preserve /usr/local/bin/preserve
USER 10001:10001
# No PRESERVE_OUT / PRESERVE_LISTEN here: the environment overrides the site config, so an image default would
# silently win over `out_dir` and `[serve] listen` (deploy/kubernetes/preserve.toml sets both).
VOLUME /evidence
EXPOSE 9731
ENTRYPOINT ["/usr/local/bin/preserve"]
CMD ["serve"]
