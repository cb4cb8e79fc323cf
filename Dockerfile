# mifdns as a container sidecar: a split-DNS stub for a pod's (or a compose service's) network
# namespace, with one PvD per network attachment. Guide: docs/sidecar.md.
#
# Build:  docker build -t mifdns .
# Run:    docker run --cap-drop ALL --cap-add NET_RAW --cap-add NET_BIND_SERVICE \
#             -v ./mifdns.yaml:/etc/mifdns/mifdns.yaml:ro mifdns
#
# Runs as uid/gid 10053 (numeric, so runAsNonRoot can check it). Capabilities: CAP_NET_RAW
# (SO_BINDTODEVICE: each PvD's queries leave only through its interface; Linux < 5.7 needs it,
# and without it mifdns refuses to start rather than leak) and CAP_NET_BIND_SERVICE (port 53),
# nothing else. They are file capabilities on a private copy of the interpreter
# (/usr/local/bin/mifdns-python) that only the daemon runs: `mifdns ctl`, pip and any other
# python in the image run without them. Under no_new_privs (Kubernetes
# allowPrivilegeEscalation: false) file capabilities do not apply: see docs/sidecar.md for the
# capability-free profile (Linux >= 5.7 and net.ipv4.ip_unprivileged_port_start=53).
#
# Config: /etc/mifdns/mifdns.yaml if mounted (else built-in defaults), then MIFDNS_* variables
# on top (docs/config.md, "Environment overrides"). The default listen address stays
# 127.0.0.53:53 (loopback only); MIFDNS_LISTEN adds e.g. the pod address.
#
# Not built in CI here (no container engine); the entrypoint, the config path, the user, the
# capability set and the health check are exercised in network namespaces by
# tests/integration/test_sidecar.py.

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY mifdns ./mifdns
# every dependency as a wheel: the runtime stage installs offline and keeps no build tools
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
COPY --from=build /wheels /wheels
RUN apt-get update \
 && apt-get install -y --no-install-recommends libcap2-bin \
 && pip install --no-cache-dir --no-index /wheels/*.whl \
 && rm -rf /wheels \
 && cp "$(readlink -f "$(command -v python3)")" /usr/local/bin/mifdns-python \
 && setcap cap_net_raw,cap_net_bind_service+ep /usr/local/bin/mifdns-python \
 && apt-get purge -y libcap2-bin && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10053 mifdns \
 && useradd --system --uid 10053 --gid 10053 --no-create-home --shell /usr/sbin/nologin mifdns \
 && mkdir -p /etc/mifdns /run/mifdns && chown 10053:10053 /run/mifdns

USER 10053:10053
ENV MIFDNS_CONTROL_SOCKET=/run/mifdns/control.sock \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
EXPOSE 53/udp 53/tcp
# exit 0 while the daemon answers on its control socket, 3 when it is unreachable
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s CMD ["mifdns", "ctl", "status"]
# = `mifdns run`, through the interpreter that carries the two capabilities
ENTRYPOINT ["/usr/local/bin/mifdns-python", "-m", "mifdns", "run"]
