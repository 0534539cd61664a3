# `quicall` in a small image: built with the Rust toolchain, run from a
# distroless base as a non-root user (uid 65532).
#
#   docker build -t quicall:latest .
#   docker run --rm quicall:latest --help
#
# Where Docker Hub and gcr.io cannot be reached, deploy/offline-images.sh
# makes stand-ins for the two base images from Debian's packages and this
# machine's Rust toolchain, and prints the `docker build` that uses them.

ARG BUILD_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BUILD_IMAGE} AS build
WORKDIR /src
COPY . .
# Without the debug info the release profile keeps for profiling.
RUN CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked --bin quicall \
    && cp target/release/quicall /quicall

FROM ${RUNTIME_IMAGE}
COPY --from=build /quicall /usr/local/bin/quicall
USER 65532:65532
EXPOSE 4433/udp 9090/tcp
ENTRYPOINT ["/usr/local/bin/quicall"]
CMD ["--help"]
