# mifdns as a container sidecar: a split-DNS stub for the pod/compose network namespace.
#
# Build:  docker build -t mifdns .
# Run:    docker run --network container:APP --cap-add NET_RAW --cap-add NET_BIND_SERVICE \
#             -v ./mifdns.yaml:/etc/mifdns/mifdns.yaml:ro mifdns
#
# Capabilities: CAP_NET_RAW (SO_BINDTODEVICE: each PvD's queries leave only through its
# interface; without it mifdns refuses to start rather than leak), CAP_NET_BIND_SERVICE
# (port 53). Nothing else. Config: a mounted /etc/mifdns/mifdns.yaml and/or MIFDNS_* variables.
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends iproute2 libcap2-bin \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY mifdns ./mifdns
RUN pip install --no-cache-dir . \
 && useradd --system --no-create-home --shell /usr/sbin/nologin mifdns \
 && mkdir -p /etc/mifdns /run/mifdns && chown mifdns /run/mifdns \
 && setcap cap_net_raw,cap_net_bind_service+ep "$(readlink -f "$(command -v python3)")"

USER mifdns
ENV MIFDNS_CONTROL_SOCKET=/run/mifdns/control.sock
HEALTHCHECK --interval=10s --timeout=3s CMD ["mifdns", "ctl", "status"]
ENTRYPOINT ["mifdns", "run"]
