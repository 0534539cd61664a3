# `quicall` in a small image: built with the Rust toolchain, run from a
# distroless base as a non-root user (uid 65532).
#
#   docker build -t quicall:latest .
#   docker run --rm quicall:latest --help

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin quicall \
    && cp target/release/quicall /quicall

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /quicall /usr/local/bin/quicall
USER 65532:65532
EXPOSE 4433/udp 9090/tcp
ENTRYPOINT ["/usr/local/bin/quicall"]
CMD ["--help"]
