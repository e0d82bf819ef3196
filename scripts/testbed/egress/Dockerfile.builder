# Build environment for LiveKit Egress (cgo against GStreamer) and its
# web template (Node). Debian 13: GStreamer 1.26 from Debian's archive.
# The Go toolchain and module cache are bind-mounted from the host at run
# time, so this image holds only Debian packages.
FROM trunkline/debian:13
RUN apt-get update -qq && \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      gcc libc6-dev pkg-config git \
      libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libglib2.0-dev \
      nodejs npm >/dev/null && \
    apt-get clean && rm -rf /var/lib/apt/lists/*
