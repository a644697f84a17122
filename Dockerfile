# slim in a container: a static (musl) binary on an empty base, plus the CA
# bundle it needs to talk to registries over HTTPS.
#
#   docker build -t slim .
#   docker run --rm -v ~/.docker:/root/.docker:ro slim myapp:latest -o myapp:slim
#
# The build stage needs the musl target and a C compiler for musl (aws-lc, the
# TLS crypto library, has C parts).
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY profiles profiles
ENV CC_x86_64_unknown_linux_musl=musl-gcc
RUN cargo build --release --locked --target x86_64-unknown-linux-musl

# For CI systems that run a script in the job's image (GitLab CI, Tekton;
# deploy/): the same binary with busybox's shell and tools.
#   docker build --target ci -t slim:ci .
FROM busybox:1.37-musl AS ci
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/slim /usr/local/bin/slim
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt

# The default target: slim alone, FROM scratch.
FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/slim /usr/local/bin/slim
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
ENTRYPOINT ["/usr/local/bin/slim"]
