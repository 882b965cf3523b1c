"""swarm driver: one Docker Swarm service per Service; scaling sets its replicas.

Swarm is declarative: it keeps the replica count, restarts failed tasks itself (its restart policy)
and rolls a changed spec over one task at a time (update_config parallelism 1, start-first). The
instances we report are the service's tasks, with the node each runs on, its state and since when.
This is how a fleet spans machines: an instance's address is its node's address plus the port
published for that task, never "localhost".

Each task publishes the service port in host mode on a port Swarm picks, so every task is reachable
(and probed) on its own; the routing mesh would hide which task answers. The Swarm service carries
hmsmgmt.managed=true, hmsmgmt.namespace, hmsmgmt.service_id and hmsmgmt.service labels, and so do
its containers. It is found again by its service_id label and named after the id, so a renamed
service keeps its Swarm service (one created before ids were labelled is found by its name label).
Its tasks' environment is PORT, the markers and the service's own variables, never the console's.

Several machines: the driver talks to one manager (DOCKER_HOST). The node list comes with every
listing (one call), so a node going Down is seen on the next tick, and a task that Swarm still
reports "running" on a Down node is reported dead ("node … down"): its container may even still
answer, but Swarm has already rescheduled it. CPU/memory of a task and stopping one task need the
engine of the node it runs on: the manager's own node always, any other node whose engine the
console may reach (HMS_SWARM_NODE_ENGINES: hostname=url pairs); elsewhere the figures stay empty
and an unhealthy task is stopped by removing it from the service's spec (a forced update).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from typing import Any

from fleet.drivers.base import DriverError, EngineUnavailable, Observed, ServiceSpec, keys_of, match_key
from fleet.drivers.docker import LABEL, Engine, StatsSampler, engine_errors, parse_time, service_env
from fleet.drivers.process import console_namespace

log = logging.getLogger(__name__)
ENDED = ("complete", "failed", "shutdown", "rejected", "orphaned", "remove")

NodeInfo = dict[str, Any]


def node_engines() -> dict[str, str]:
    """HMS_SWARM_NODE_ENGINES ("node1=unix:///run/n1.sock,node2=tcp://10.0.0.2:2376"): the
    engines of nodes other than the manager's, by hostname (or node id)."""
    from django.conf import settings

    pairs = [p.strip() for p in (getattr(settings, "HMS_SWARM_NODE_ENGINES", "") or "").split(",") if p.strip()]
    return dict(p.split("=", 1) for p in pairs if "=" in p)


def node_info(n: dict[str, Any], local_node: str) -> NodeInfo:
    """What the console keeps of a Swarm node (pure)."""
    status = n.get("Status") or {}
    desc = n.get("Description") or {}
    spec = n.get("Spec") or {}
    manager = n.get("ManagerStatus") or {}
    addr = status.get("Addr", "")
    if addr in ("", "0.0.0.0") and n["ID"] == local_node:
        addr = "127.0.0.1"  # a node that did not advertise an address: reach it locally
    resources = desc.get("Resources") or {}
    return {
        "id": n["ID"], "hostname": desc.get("Hostname", n["ID"][:12]), "addr": addr,
        "state": status.get("State", "unknown"), "message": status.get("Message", ""),
        "availability": spec.get("Availability", "active"), "role": spec.get("Role", "worker"),
        "leader": bool(manager.get("Leader")), "reachability": manager.get("Reachability", ""),
        "engine_version": (desc.get("Engine") or {}).get("EngineVersion", ""),
        "nano_cpus": resources.get("NanoCPUs") or 0, "memory_bytes": resources.get("MemoryBytes") or 0,
    }


class SwarmDriver:
    name = "swarm"
    declarative = True

    def __init__(self, engine: Engine | None = None) -> None:
        self.engine = engine or Engine()
        self.stats = StatsSampler(self.engine)
        self._nodes: dict[str, NodeInfo] = {}
        self._nodes_at = 0.0  # monotonic time of the last node listing
        self._local_node = ""
        # Engines of the other nodes (HMS_SWARM_NODE_ENGINES, read once), with a stats sampler each.
        self._engine_urls = node_engines()
        self._node_engines: dict[str, tuple[Engine, StatsSampler]] = {}

    # naming and labels
    @staticmethod
    def service_name(spec: ServiceSpec) -> str:
        # Swarm names are DNS labels (letters, digits, '-'; at most 63): ours may hold '_' and '.'.
        namespace = console_namespace()
        safe = re.sub(r"[^a-z0-9-]", "-", spec.name.lower()).strip("-")[:30] or "svc"
        # The digest is of the id: a Swarm service created before a rename keeps its name anyway
        # (updates keep it), and the next one of a service created afresh under an old name differs.
        digest = hashlib.sha1(f"{namespace}:{spec.key}".encode()).hexdigest()[:8]
        return f"hms-{safe}-{digest}"

    @staticmethod
    def labels(spec: ServiceSpec) -> dict[str, str]:
        return {
            f"{LABEL}.managed": "true",
            f"{LABEL}.namespace": console_namespace(),
            f"{LABEL}.service_id": spec.key,
            f"{LABEL}.service": spec.name,
            f"{LABEL}.spec_version": str(spec.version),
        }

    def _find(self, spec: ServiceSpec) -> dict[str, Any] | None:
        ours = [f"{LABEL}.managed=true", f"{LABEL}.namespace={console_namespace()}"]
        with engine_errors("service lookup"):
            found = self.engine.api.services(filters={"label": [*ours, f"{LABEL}.service_id={spec.key}"]})
            if not found:
                # Created before ids were labelled: by its name, if it carries no id at all.
                found = [svc for svc in self.engine.api.services(
                    filters={"label": [*ours, f"{LABEL}.service={spec.name}"]})
                    if f"{LABEL}.service_id" not in (svc["Spec"].get("Labels") or {})]
        return found[0] if found else None

    def _task_template(self, spec: ServiceSpec) -> Any:
        from docker.types import ContainerSpec, RestartPolicy, TaskTemplate

        return TaskTemplate(
            container_spec=ContainerSpec(
                spec.image,
                env=[f"{k}={v}" for k, v in service_env(spec, "").items()],
                labels=self.labels(spec),
                stop_grace_period=5_000_000_000,
            ),
            # Swarm's own restart policy fails over here: any exit, and no delay (the SDK sends 0 s;
            # the CLI's 5 s default would add 5 s to every node loss: bench/bench_nodes.py).
            restart_policy=RestartPolicy(condition="any"),
        )

    def _endpoint(self, spec: ServiceSpec) -> Any:
        from docker.types import EndpointSpec

        # dnsrr, not a virtual IP: each task is reached at its own node's port, and a VIP needs IPVS,
        # which not every kernel has.
        return EndpointSpec(mode="dnsrr", ports=[{"Protocol": "tcp", "TargetPort": spec.port, "PublishMode": "host"}])

    # Driver protocol
    def set_replicas(self, spec: ServiceSpec, replicas: int) -> None:
        from docker.errors import APIError
        from docker.types import ServiceMode, UpdateConfig

        if not spec.image:
            raise DriverError(f"service {spec.name} has no image for the swarm driver")
        api = self.engine.api
        current = self._find(spec)
        with engine_errors("service update"):
            try:
                if current is None:
                    api.create_service(
                        self._task_template(spec), name=self.service_name(spec), labels=self.labels(spec),
                        mode=ServiceMode("replicated", replicas=replicas),
                        update_config=UpdateConfig(parallelism=1, order="start-first", failure_action="continue"),
                        endpoint_spec=self._endpoint(spec),
                    )
                    return
                have_replicas = current["Spec"].get("Mode", {}).get("Replicated", {}).get("Replicas")
                have_version = current["Spec"].get("Labels", {}).get(f"{LABEL}.spec_version")
                if have_replicas == replicas and have_version == str(spec.version):
                    return
                api.update_service(
                    current["ID"], current["Version"]["Index"], self._task_template(spec),
                    name=current["Spec"]["Name"], labels=self.labels(spec),
                    mode=ServiceMode("replicated", replicas=replicas),
                    update_config=UpdateConfig(parallelism=1, order="start-first", failure_action="continue"),
                    endpoint_spec=self._endpoint(spec),
                )
            except APIError as exc:
                if exc.status_code == 503:
                    raise EngineUnavailable(f"Swarm manager unavailable: {exc.explanation}") from exc
                raise DriverError(f"Swarm refused to scale {spec.name}: {exc.explanation}") from exc

    def list_instances(self, spec: ServiceSpec) -> list[Observed]:
        current = self._find(spec)
        if current is None:
            return []
        with engine_errors("task list"):
            tasks = self.engine.api.tasks(filters={"service": current["ID"]})
            nodes = self.node_map()
        return [self._observed(task, spec, current, nodes) for task in tasks]

    def list_all(self, specs: dict[str, ServiceSpec]) -> dict[str, list[Observed]]:
        """The tasks of every named service from two calls (our services by label, then every
        task of the swarm), so the controller's tick lists Swarm once for the whole fleet. Each
        task carries its service's replica count and spec version (extra), which tell a service at
        rest from one that still converges."""
        api = self.engine.api
        found: dict[str, list[Observed]] = {name: [] for name in specs}
        by_key, by_name = keys_of(specs)
        with engine_errors("service list"):
            services = api.services(filters={"label": [f"{LABEL}.managed=true",
                                                        f"{LABEL}.namespace={console_namespace()}"]})
            ours: dict[str, tuple[str, dict[str, Any]]] = {}
            for svc in services:
                labels = svc["Spec"].get("Labels") or {}
                listed = match_key(by_key, by_name, labels.get(f"{LABEL}.service_id"), labels.get(f"{LABEL}.service"))
                if listed is not None:
                    ours[svc["ID"]] = (listed, svc)
            tasks = api.tasks() if ours else []
            nodes = self.node_map()  # every tick: a node going Down must be seen at once
        for task in tasks:
            mine = ours.get(task.get("ServiceID", ""))
            if mine is not None:
                name, current = mine
                found[name].append(self._observed(task, specs[name], current, nodes))
        return found

    def _observed(self, task: dict[str, Any], spec: ServiceSpec, service: dict[str, Any],
                  nodes: dict[str, NodeInfo]) -> Observed:
        st = task.get("Status") or {}
        state = st.get("State", "")
        node = nodes.get(task.get("NodeID", ""), {})
        node_down = bool(node) and node.get("state") != "ready"
        port = next((p.get("PublishedPort") for p in (st.get("PortStatus") or {}).get("Ports") or []
                     if p.get("TargetPort") == spec.port and p.get("PublishedPort")), None)
        container = (st.get("ContainerStatus") or {}).get("ContainerID", "")
        cpu = memory = None
        sampler = self._sampler(task.get("NodeID", ""), node)
        if state == "running" and container and sampler is not None and not node_down:
            cpu, memory = sampler.sample(container)  # in the background: never in the tick
        detail = state
        if node_down:
            # Swarm keeps the last state it heard from a lost node: the task is gone for us.
            detail = f"lost: node {node.get('hostname')} {node.get('state')}"
        elif st.get("Err"):
            detail = f"{state}: {st['Err']}"
        elif (st.get("ContainerStatus") or {}).get("ExitCode") not in (None, 0):
            detail = f"{state}: exit code {st['ContainerStatus']['ExitCode']}"
        labels = ((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels") or {}
        service_spec = service.get("Spec") or {}
        return Observed(
            ref=task["ID"][:12],
            alive=state == "running" and not node_down,
            host=node.get("addr", ""),
            port=port,
            node=node.get("hostname", task.get("NodeID", "")[:12]),
            started_at=parse_time(st.get("Timestamp")) if state == "running" else parse_time(task.get("CreatedAt")),
            detail=detail,
            cpu_percent=cpu,
            memory_bytes=memory,
            extra={"state": "lost" if node_down and state == "running" else state,
                   "node_id": task.get("NodeID", ""), "node_state": node.get("state", ""),
                   "desired": task.get("DesiredState", ""), "slot": task.get("Slot"),
                   "since": st.get("Timestamp", ""), "container": container[:12],
                   "spec_version": labels.get(f"{LABEL}.spec_version", ""),
                   "replicas": (service_spec.get("Mode") or {}).get("Replicated", {}).get("Replicas"),
                   "service_version": (service_spec.get("Labels") or {}).get(f"{LABEL}.spec_version", "")},
        )

    def start_instance(self, spec: ServiceSpec, instance_id: int) -> Observed:
        raise DriverError("the swarm driver is declarative: set_replicas() lets Swarm start tasks")

    def stop_instance(self, spec: ServiceSpec, ref: str, *, grace_seconds: float = 5.0) -> None:
        """Stop one task's container through the engine of the node it runs on (the manager's, or
        one HMS_SWARM_NODE_ENGINES names): Swarm notices and replaces the task. Used when a probe
        declares a task unhealthy."""
        from docker.errors import APIError, NotFound

        api = self.engine.api
        with engine_errors("task stop"):
            try:
                task = api.inspect_task(ref)
            except (NotFound, APIError):
                return
            labels = ((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels") or {}
            by_key, by_name = keys_of({spec.name: spec})
            if (labels.get(f"{LABEL}.namespace") != console_namespace()
                    or match_key(by_key, by_name, labels.get(f"{LABEL}.service_id"), labels.get(f"{LABEL}.service"))
                    is None):
                return
            container = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
            engine = self._engine_of(task.get("NodeID", ""))
            if container and engine is not None:
                try:
                    engine.api.stop(container, timeout=max(0, int(round(grace_seconds))))
                except (NotFound, APIError):
                    pass
                return
        # No engine of that node to reach (HMS_SWARM_NODE_ENGINES names none): Swarm has no call
        # to stop one task, so the task keeps running until its node's engine can be reached.
        log.warning("cannot stop swarm task %s: no engine for its node", ref)

    def remove_service(self, spec: ServiceSpec) -> None:
        from docker.errors import NotFound

        current = self._find(spec)
        if current is None:
            return
        with engine_errors("service removal"):
            try:
                self.engine.api.remove_service(current["ID"])
            except NotFound:
                pass

    # nodes
    def _local(self) -> str:
        if not self._local_node:
            with engine_errors("info"):
                self._local_node = (self.engine.api.info().get("Swarm") or {}).get("NodeID", "")
        return self._local_node

    def node_map(self) -> dict[str, NodeInfo]:
        """Every node of the swarm, by id: one call (the manager answers from its own state)."""
        local = self._local()
        with engine_errors("node list"):
            self._nodes = {n["ID"]: node_info(n, local) for n in self.engine.api.nodes()}
        self._nodes_at = time.monotonic()
        return self._nodes

    def nodes(self, max_age: float = 0.0) -> list[NodeInfo]:
        """The swarm's nodes, sorted by hostname; the last listing when it is at most max_age old
        (the tick's own listing, taken moments before)."""
        fresh = self._nodes and time.monotonic() - self._nodes_at <= max_age
        return sorted((self._nodes if fresh else self.node_map()).values(), key=lambda n: n["hostname"])

    def set_availability(self, node_id: str, availability: str) -> None:
        """Drain, pause or activate a node: Swarm moves a drained node's tasks elsewhere itself."""
        from docker.errors import APIError

        if availability not in ("active", "pause", "drain"):
            raise DriverError(f"unknown availability {availability!r}")
        api = self.engine.api
        with engine_errors("node update"):
            node = api.inspect_node(node_id)
            spec = dict(node.get("Spec") or {}, Availability=availability)
            try:
                api.update_node(node_id, node["Version"]["Index"], spec)
            except APIError as exc:
                raise DriverError(f"Swarm refused to set {node_id[:12]} {availability}: {exc.explanation}") from exc

    def _engine_of(self, node_id: str) -> Engine | None:
        self._local()
        pair = self._node_pair(node_id, self._nodes.get(node_id, {}))
        return pair[0] if pair else None

    def _sampler(self, node_id: str, node: NodeInfo) -> StatsSampler | None:
        pair = self._node_pair(node_id, node)
        return pair[1] if pair else None

    def _node_pair(self, node_id: str, node: NodeInfo) -> tuple[Engine, StatsSampler] | None:
        """The engine and stats sampler of a node: the manager's own for its node, else the one
        HMS_SWARM_NODE_ENGINES names (by hostname or node id), else none."""
        if node_id and node_id == self._local_node:
            return self.engine, self.stats
        url = self._engine_urls.get(node.get("hostname", "")) or self._engine_urls.get(node_id)
        if not url:
            return None
        pair = self._node_engines.get(url)
        if pair is None:
            engine = Engine(url)
            pair = self._node_engines[url] = (engine, StatsSampler(engine))
        return pair
