# The service image: built on Debian 12 with FFmpeg 5.1's development packages, run on
# debian:bookworm-slim with the same FFmpeg runtime libraries at exactly the versions the binary
# was built against (a security update between the two stages fails the build, not the service).

FROM rust:1.95-bookworm AS builder
# The runtime stage installs these exact versions, recorded below; hadolint's pinning rule
# (DL3008) is met there, not here.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libavcodec-dev libavformat-dev libavutil-dev libavfilter-dev libswscale-dev \
        libswresample-dev libavdevice-dev pkg-config clang libclang-dev \
    && rm -rf /var/lib/apt/lists/*
# The runtime stage's packages for apt-get (.ci/runtime-packages, which CI's .ci/runtime-stage
# installs too: ca-certificates, and the libav* runtime libraries the -dev packages pulled in as
# `package=version` lines), and the libav* versions pkg-config reports (what the binary was
# compiled against).
COPY .ci/runtime-packages /usr/local/bin/
RUN mkdir -p /out \
    && runtime-packages > /out/runtime-packages \
    && for lib in libavcodec libavformat libavutil libavfilter libswscale libswresample libavdevice; do \
        echo "$lib=$(pkg-config --modversion "$lib")"; \
    done > /out/libav-versions
WORKDIR /src
# build.rs downloads the pinned hls.js tarball from registry.npmjs.org with curl (in this image)
# and checks its SHA-512; the binary embeds its dist/hls.min.js for the player page.
COPY Cargo.toml Cargo.lock build.rs ./
COPY benches benches
COPY src src
RUN cargo build --release --locked --bin video-transcoder \
    && cp target/release/video-transcoder /out/

FROM debian:bookworm-slim
COPY --from=builder /out/runtime-packages /out/libav-versions /usr/local/share/video-transcoder/
# ca-certificates for HTTPS to Google APIs; the libav* runtime packages at the builder's versions.
# .ci/runtime-stage builds this stage without Docker, and runs the binary in it: keep the two alike.
RUN apt-get update \
    && xargs -a /usr/local/share/video-transcoder/runtime-packages \
        apt-get install -y --no-install-recommends \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 transcoder \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin transcoder \
    && install -d -o transcoder -g transcoder /var/lib/video-transcoder
COPY --from=builder /out/video-transcoder /usr/local/bin/video-transcoder
# A folder of its own, so the local stores' defaults (./data/…) work in a plain `docker run`.
WORKDIR /var/lib/video-transcoder
USER 10001:10001
# Cloud Run sets PORT itself; a container must listen on every interface, not loopback.
ENV PORT=8080 \
    BIND_ADDRESS=0.0.0.0 \
    LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/video-transcoder"]
