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
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any

from fleet.drivers.base import DriverError, EngineUnavailable, Observed, ServiceSpec, keys_of, match_key
from fleet.drivers.docker import LABEL, Engine, StatsSampler, engine_errors, parse_time, service_env
from fleet.drivers.process import console_namespace

ENDED = ("complete", "failed", "shutdown", "rejected", "orphaned", "remove")
NODE_CACHE_SECONDS = 30.0


class SwarmDriver:
    name = "swarm"
    declarative = True

    def __init__(self, engine: Engine | None = None) -> None:
        self.engine = engine or Engine()
        self.stats = StatsSampler(self.engine)
        self._nodes: dict[str, dict[str, str]] = {}
        self._nodes_at = 0.0
        self._local_node = ""

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
            # Swarm's own restart policy (its defaults: any exit, 5 s delay) is what fails over here.
            restart_policy=RestartPolicy(condition="any"),
        )

    def _endpoint(self, spec: ServiceSpec) -> Any:
        from docker.types import EndpointSpec

        return EndpointSpec(mode="vip", ports=[{"Protocol": "tcp", "TargetPort": spec.port, "PublishMode": "host"}])

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
            nodes = self._node_map()
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
            nodes = self._node_map() if ours else {}
        for task in tasks:
            mine = ours.get(task.get("ServiceID", ""))
            if mine is not None:
                name, current = mine
                found[name].append(self._observed(task, specs[name], current, nodes))
        return found

    def _observed(self, task: dict[str, Any], spec: ServiceSpec, service: dict[str, Any],
                  nodes: dict[str, dict[str, str]]) -> Observed:
        st = task.get("Status") or {}
        state = st.get("State", "")
        node = nodes.get(task.get("NodeID", ""), {})
        port = next((p.get("PublishedPort") for p in (st.get("PortStatus") or {}).get("Ports") or []
                     if p.get("TargetPort") == spec.port and p.get("PublishedPort")), None)
        container = (st.get("ContainerStatus") or {}).get("ContainerID", "")
        cpu = memory = None
        if state == "running" and container and task.get("NodeID") == self._local_node:
            cpu, memory = self.stats.sample(container)  # only where it is cheap: this node
        detail = state
        if st.get("Err"):
            detail = f"{state}: {st['Err']}"
        elif (st.get("ContainerStatus") or {}).get("ExitCode") not in (None, 0):
            detail = f"{state}: exit code {st['ContainerStatus']['ExitCode']}"
        labels = ((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels") or {}
        service_spec = service.get("Spec") or {}
        return Observed(
            ref=task["ID"][:12],
            alive=state == "running",
            host=node.get("addr", ""),
            port=port,
            node=node.get("hostname", task.get("NodeID", "")[:12]),
            started_at=parse_time(st.get("Timestamp")) if state == "running" else parse_time(task.get("CreatedAt")),
            detail=detail,
            cpu_percent=cpu,
            memory_bytes=memory,
            extra={"state": state, "desired": task.get("DesiredState", ""), "slot": task.get("Slot"),
                   "since": st.get("Timestamp", ""), "container": container[:12],
                   "spec_version": labels.get(f"{LABEL}.spec_version", ""),
                   "replicas": (service_spec.get("Mode") or {}).get("Replicated", {}).get("Replicas"),
                   "service_version": (service_spec.get("Labels") or {}).get(f"{LABEL}.spec_version", "")},
        )

    def start_instance(self, spec: ServiceSpec, instance_id: int) -> Observed:
        raise DriverError("the swarm driver is declarative: set_replicas() lets Swarm start tasks")

    def stop_instance(self, spec: ServiceSpec, ref: str, *, grace_seconds: float = 5.0) -> None:
        """Stop one task's container (when it runs on this engine's node): Swarm notices and
        replaces the task. Used when a probe declares a task unhealthy."""
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
            if container and task.get("NodeID") == self._local():
                try:
                    api.stop(container, timeout=max(0, int(round(grace_seconds))))
                except (NotFound, APIError):
                    pass

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

    def _node_map(self) -> dict[str, dict[str, str]]:
        if time.monotonic() - self._nodes_at > NODE_CACHE_SECONDS or not self._nodes:
            self._local()
            nodes = {}
            for n in self.engine.api.nodes():
                addr = (n.get("Status") or {}).get("Addr", "")
                if addr in ("", "0.0.0.0") and n["ID"] == self._local_node:
                    addr = "127.0.0.1"  # a node that did not advertise an address: reach it locally
                nodes[n["ID"]] = {"hostname": (n.get("Description") or {}).get("Hostname", n["ID"][:12]),
                                  "addr": addr}
            self._nodes, self._nodes_at = nodes, time.monotonic()
        return self._nodes

