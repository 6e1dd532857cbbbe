# h5gate in a container: Debian 12's own Python and ffmpeg, a virtual environment, a non-root user.
#   docker build -t h5gate .
#   docker run -d --name h5gate -p 8080:8080 -p 50000-50100:50000-50100/udp -v h5gate-data:/var/lib/h5gate h5gate
# docs/deploy.md has the compose file, the reverse proxy and the WebRTC notes.
FROM debian:12-slim

# ffmpeg from Debian (imageio-ffmpeg's bundled binary is the fallback); tini reaps ffmpeg children if the
# server is killed hard and forwards SIGTERM so every ffmpeg is stopped with it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ffmpeg ca-certificates tini \
 && rm -rf /var/lib/apt/lists/*

COPY pyproject.toml README.md /src/
COPY supervisor /src/supervisor
COPY workers /src/workers
COPY templates /src/templates
COPY media /src/media
RUN python3 -m venv /opt/h5gate \
 && /opt/h5gate/bin/pip install --no-cache-dir --disable-pip-version-check /src \
 && rm -rf /src

RUN useradd --system --home-dir /var/lib/h5gate --create-home --shell /usr/sbin/nologin h5gate
USER h5gate
WORKDIR /var/lib/h5gate
VOLUME ["/var/lib/h5gate"]

# WebRTC needs a UDP range published 1:1 (ICE advertises the container's ports); keep it small, because
# docker starts a proxy per published port. Set H5GATE_WEBRTC_PUBLIC_IP to the host's address for browsers.
ENV H5GATE_DATA_DIR=/var/lib/h5gate \
    H5GATE_WEBRTC_PORT_MIN=50000 \
    H5GATE_WEBRTC_PORT_MAX=50100 \
    PATH=/opt/h5gate/bin:$PATH
EXPOSE 8080/tcp 50000-50100/udp

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
  CMD python3 -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status != 200)"

ENTRYPOINT ["/usr/bin/tini", "--", "/opt/h5gate/bin/h5gate"]
CMD ["serve"]
