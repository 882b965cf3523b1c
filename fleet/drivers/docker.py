"""docker driver: one container per instance on a single Docker engine.

The engine is reached the Docker SDK's usual way (DOCKER_HOST, or the local socket). Every
container carries labels that make it findable again by any of our processes, and only by the
console that owns it:

    hmsmgmt.managed=true          (CI and the tests clean up by this label)
    hmsmgmt.namespace=<console>   (two consoles on one engine never see each other's containers)
    hmsmgmt.service_id=<Service.pk>  (what we match: a renamed service keeps its containers)
    hmsmgmt.service=<name>           (for people: `docker ps`; matched only on containers that
                                      predate service_id)
    hmsmgmt.instance=<Instance.pk>
    hmsmgmt.spec_version=<n>

A container's environment is PORT, the HMSMGMT_* markers and the service's own variables (never
the console's). The container name is derived from (namespace, service id, instance id), so the engine itself refuses
a second container for the same instance: a retried or racing start adopts the existing container
instead of creating a duplicate. Ports are published on 127.0.0.1 only, on a port the engine picks.
Connection failures and timeouts become EngineUnavailable quickly (HMS_DOCKER_TIMEOUT, default 5 s)
so an API request can answer 503 within its deadline.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import requests
from django.conf import settings

from fleet.drivers.base import DriverError, EngineUnavailable, Observed, ServiceSpec, keys_of, match_key
from fleet.drivers.process import console_namespace

LABEL = "hmsmgmt"
TIMEOUT = settings.HMS_DOCKER_TIMEOUT
STATS_EVERY = settings.HMS_DOCKER_STATS_SECONDS  # stats cost one call per container


# --- engine connection and error mapping -------------------------------------------------------
class Engine:
    """A lazily (re)connected Docker client. Shared by the docker and swarm drivers."""

    def __init__(self, base_url: str | None = None) -> None:
        self._client: Any = None
        self._lock = threading.Lock()
        self.base_url = base_url  # None: DOCKER_HOST or the local socket, as the Docker SDK decides

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                import docker

                with engine_errors("connect"):
                    # "auto" asks the daemon for its API version: one call, and it fails fast when
                    # the daemon is down, so we never cache a client for an engine we have not seen.
                    if self.base_url:
                        self._client = docker.DockerClient(base_url=self.base_url, timeout=TIMEOUT, version="auto")
                    else:
                        self._client = docker.from_env(timeout=TIMEOUT, version="auto")
            return self._client

    @property
    def api(self) -> Any:
        return self.client.api


@contextmanager
def engine_errors(op: str) -> Iterator[None]:
    from docker.errors import APIError, DockerException

    try:
        yield
    except (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError) as exc:
        raise EngineUnavailable(f"Docker engine unreachable during {op}: {_short(exc)}") from exc
    except APIError as exc:
        # A daemon on its way down still answers for a moment, refusing everything: that is the
        # engine going away, not a refusal of this request (which would count toward a crash loop).
        if going_away(exc):
            raise EngineUnavailable(f"Docker engine unavailable during {op}: {_short(exc)}") from exc
        raise
    except DockerException as exc:
        # from_env() wraps a refused connection into a bare DockerException.
        raise EngineUnavailable(f"Docker engine unreachable during {op}: {_short(exc)}") from exc


def going_away(exc: Any) -> bool:
    return exc.status_code in (502, 503, 504) or "shutting down" in str(exc.explanation or "")


def _short(exc: BaseException) -> str:
    text = str(exc)
    # requests nests the root cause deep inside its message; keep the part an operator can act on.
    for needle in ("Connection refused", "No such file or directory", "Read timed out", "timed out"):
        if needle in text:
            return needle
    return text[:200]


def parse_time(value: str | None) -> datetime | None:
    """Docker timestamps carry nanoseconds; Python wants at most microseconds."""
    if not value or value.startswith("0001-"):
        return None
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?", value)
    if not match:
        return None
    frac = (match.group(2) or ".0")[:7]
    tz = match.group(3) or "Z"
    return datetime.fromisoformat(f"{match.group(1)}{frac}{'+00:00' if tz == 'Z' else tz}").astimezone(UTC)


# --- per-container stats ---------------------------------------------------------------------------
class StatsSampler:
    """CPU % and memory per container, sampled by a background thread.

    The engine's stats call takes about a second per container (it waits for a second CPU reading),
    so it must never sit in the reconcile loop: list_instances() only reads the latest sample and
    marks the container as wanted; containers nobody asked about for a minute are dropped."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._wanted: dict[str, float] = {}
        self._values: dict[str, tuple[float | None, int | None]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def sample(self, container_id: str) -> tuple[float | None, int | None]:
        with self._lock:
            self._wanted[container_id] = time.monotonic()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="docker-stats", daemon=True)
                self._thread.start()
            return self._values.get(container_id, (None, None))

    def _run(self) -> None:
        while True:
            now = time.monotonic()
            with self._lock:
                for cid in [c for c, at in self._wanted.items() if now - at > 60]:
                    self._wanted.pop(cid, None)
                    self._values.pop(cid, None)
                ids = list(self._wanted)
            for cid in ids:
                try:
                    raw = self._engine.api.stats(cid, stream=False)
                except Exception:
                    continue  # gone, or the engine is away: the next round tries again
                with self._lock:
                    self._values[cid] = stats_figures(raw)
            time.sleep(STATS_EVERY)


def stats_figures(raw: dict[str, Any]) -> tuple[float | None, int | None]:
    cpu, pre = raw.get("cpu_stats") or {}, raw.get("precpu_stats") or {}
    total = int((cpu.get("cpu_usage") or {}).get("total_usage") or 0)
    pre_total = int((pre.get("cpu_usage") or {}).get("total_usage") or 0)
    system, pre_system = int(cpu.get("system_cpu_usage") or 0), int(pre.get("system_cpu_usage") or 0)
    percent = None
    if system > pre_system and pre_system:
        percent = round(
            max(0.0, (total - pre_total) / (system - pre_system) * int(cpu.get("online_cpus") or 1) * 100.0), 2
        )
    mem = raw.get("memory_stats") or {}
    memory = mem.get("usage")
    if memory is not None:
        memory = int(memory) - int((mem.get("stats") or {}).get("cache", 0) or 0)
    return percent, memory


# --- events: wake the reconciler when a container dies -----------------------------------------
class DeathReports:
    """Container deaths the engine's event stream reported, by short container id.

    The `die` event is sent while the engine is still tearing the container down (releasing its
    network, which takes a good 100 ms): for that long, the container list still shows it running
    and inspecting it blocks. The event is authoritative (restart policy `no`: a container that died
    stays dead), so list_instances() trusts it, and a fail-over need not wait for the teardown."""

    KEEP_SECONDS = 120.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dead: dict[str, tuple[float, str]] = {}  # ref -> (when, detail)
        self._oom: dict[str, tuple[float, str]] = {}

    def oom(self, container_id: str) -> None:
        with self._lock:
            self._oom[container_id[:12]] = (time.monotonic(), "")

    def died(self, container_id: str, exit_code: str | None) -> None:
        ref, now = container_id[:12], time.monotonic()
        with self._lock:
            for table in (self._dead, self._oom):
                for old in [k for k, (at, _) in table.items() if now - at > self.KEEP_SECONDS]:
                    del table[old]
            code = int(exit_code) if (exit_code or "").isdigit() else None
            oom = self._oom.pop(ref, None) is not None
            self._dead[ref] = (now, describe_exit({"Status": "exited", "ExitCode": code, "OOMKilled": oom}))

    def get(self, ref: str) -> str | None:
        with self._lock:
            entry = self._dead.get(ref[:12])
            return entry[1] if entry else None


def service_env(spec: ServiceSpec, instance: str) -> dict[str, str]:
    """A container's (or Swarm task's) environment: the service's own variables, then the markers
    (which win); nothing of the console's. instance: the Instance.pk, or "" (Swarm, spares)."""
    env = {k: v for k, v in spec.env if not k.startswith("HMSMGMT_") and k != "PORT"}
    env |= {"PORT": str(spec.port), "HMSMGMT_SERVICE": spec.name, "HMSMGMT_SERVICE_ID": spec.key}
    if instance:
        env["HMSMGMT_INSTANCE"] = instance
    return env


def event_key(attrs: dict[str, str]) -> str | None:
    """The service key (ServiceSpec.key) an engine event's labels name: its id, or for a container
    from before ids were labelled, "name:<name>"."""
    if key := attrs.get(f"{LABEL}.service_id"):
        return key
    name = attrs.get(f"{LABEL}.service")
    return f"name:{name}" if name else None


def watch_deaths(
    engine: Engine, on_death: Callable[[str], None], *, driver: str, reports: DeathReports | None = None
) -> threading.Thread:
    """Follow the engine's event stream and call on_death(service key, see event_key) as soon as one of this
    console's containers dies, so fail-over does not wait for the next reconcile tick. Each death is
    first noted in reports (before on_death), with its exit code. Reconnects (every 2 s) while the
    engine is away; polling by the controller stays the safety net."""

    def run() -> None:
        while True:
            try:
                import docker

                # A client of its own without a read timeout: the stream is quiet for long stretches.
                client = docker.from_env(timeout=None, version="auto")
                filters = {
                    "type": "container",
                    "event": ["die", "destroy", "oom"],
                    "label": [f"{LABEL}.managed=true", f"{LABEL}.namespace={console_namespace()}"],
                }
                for event in client.api.events(filters=filters, decode=True):
                    actor = event.get("Actor") or {}
                    attrs = actor.get("Attributes") or {}
                    name = event_key(attrs)
                    # Swarm tasks carry the same labels; only the driver that runs them cares.
                    is_task = "com.docker.swarm.task.id" in attrs
                    if not name or is_task != (driver == "swarm"):
                        continue
                    action = event.get("Action") or event.get("status")
                    container_id = actor.get("ID") or event.get("id") or ""
                    if action == "oom":
                        if reports is not None and container_id:
                            reports.oom(container_id)
                        continue
                    if action == "die" and reports is not None and container_id:
                        reports.died(container_id, attrs.get("exitCode"))
                    on_death(name)
            except Exception:
                pass
            time.sleep(2.0)

    thread = threading.Thread(target=run, name=f"{driver}-events", daemon=True)
    thread.start()
    return thread


def describe_exit(state: dict[str, Any]) -> str:
    """Why a container is not running, in an operator's words."""
    code = state.get("ExitCode")
    status = state.get("Status", "exited")
    parts = [f"{status} with code {code}" if code is not None else status]
    if state.get("OOMKilled"):
        parts.append("OOM-killed")
    elif code == 137:
        parts.append("killed (SIGKILL)")
    elif code == 143:
        parts.append("terminated (SIGTERM)")
    if state.get("Error"):
        parts.append(str(state["Error"])[:120])
    return ", ".join(parts)


# --- the driver ---------------------------------------------------------------------------------------
class DockerDriver:
    name = "docker"
    declarative = False

    def __init__(self, engine: Engine | None = None) -> None:
        self.engine = engine or Engine()
        self.stats = StatsSampler(self.engine)
        self.deaths = DeathReports()
        self._watcher: threading.Thread | None = None

    # naming and labels
    @staticmethod
    def container_name(spec: ServiceSpec, instance_id: int) -> str:
        # By the service's id, not its name: a start retried after a rename still finds (and
        # adopts) the container of its instance.
        safe = re.sub(r"[^a-zA-Z0-9_.-]", "-", spec.key).lower()
        return f"hms-{console_namespace()}-{safe}-{instance_id}"

    @staticmethod
    def labels(spec: ServiceSpec, instance_id: int) -> dict[str, str]:
        return {
            f"{LABEL}.managed": "true",
            f"{LABEL}.namespace": console_namespace(),
            f"{LABEL}.service_id": spec.key,
            f"{LABEL}.service": spec.name,
            f"{LABEL}.instance": str(instance_id),
            f"{LABEL}.spec_version": str(spec.version),
        }

    @staticmethod
    def _filters() -> dict[str, Any]:
        # The namespace only: a service's containers are picked by match_key (its id label, or its
        # name on containers from before ids were labelled), which the engine's filter cannot say.
        return {"label": [f"{LABEL}.managed=true", f"{LABEL}.namespace={console_namespace()}"]}

    # Driver protocol
    def start_instance(self, spec: ServiceSpec, instance_id: int) -> Observed:
        return self._run(
            spec, self.container_name(spec, instance_id), self.labels(spec, instance_id), str(instance_id), instance_id
        )

    def start_spare(self, spec: ServiceSpec) -> Observed:
        """A warm spare: a running container of the service that no instance claims yet. Fail-over
        adopts it (no container start on the critical path) and a new spare is started after."""
        labels = {**self.labels(spec, 0), f"{LABEL}.role": "spare"}
        labels.pop(f"{LABEL}.instance")
        name = f"{self.container_name(spec, 0)[:-2]}-spare-{os.urandom(3).hex()}"
        obs = self._run(spec, name, labels, "spare", None)
        obs.extra["spare"] = True
        return obs

    def _run(
        self, spec: ServiceSpec, name: str, labels: dict[str, str], instance_env: str, instance_id: int | None
    ) -> Observed:
        from docker.errors import APIError, ImageNotFound, NotFound

        if not spec.image:
            raise DriverError(f"service {spec.name} has no image for the docker driver")
        api = self.engine.api
        port_key = f"{spec.port}/tcp"
        with engine_errors("container create"):
            try:
                created = api.create_container(
                    spec.image,
                    name=name,
                    labels=labels,
                    environment=service_env(spec, instance_env),
                    ports=[spec.port],
                    host_config=api.create_host_config(
                        port_bindings={spec.port: ("127.0.0.1",)},
                        # The controller replaces dead instances (and audits it); the engine must not.
                        restart_policy={"Name": "no"},
                    ),
                )
                container_id = created["Id"]
            except ImageNotFound as exc:
                raise DriverError(
                    f"image {spec.image} is not on the engine (nothing is pulled here; "
                    f"`manage.py build_sample_image` builds the sample)"
                ) from exc
            except APIError as exc:
                if going_away(exc):
                    raise
                if exc.status_code != 409:
                    raise DriverError(f"cannot create container for {spec.name}: {exc.explanation}") from exc
                # A container for this instance exists already (a start whose answer we lost):
                # adopt it rather than create a second one.
                container_id = api.inspect_container(name)["Id"]
            try:
                api.start(container_id)
                info = api.inspect_container(container_id)
            except NotFound as exc:
                raise DriverError(f"container {name} vanished while starting") from exc
            except APIError as exc:
                if going_away(exc):
                    raise
                api.remove_container(container_id, force=True)
                raise DriverError(f"cannot start container for {spec.name}: {exc.explanation}") from exc
        bindings = ((info.get("NetworkSettings") or {}).get("Ports") or {}).get(port_key) or []
        host_port = int(bindings[0]["HostPort"]) if bindings else None
        return Observed(
            ref=container_id[:12],
            alive=True,
            host="127.0.0.1",
            port=host_port,
            node=self._node_name(),
            instance_id=instance_id,
            started_at=parse_time(info["State"].get("StartedAt")),
        )

    def stop_instance(self, spec: ServiceSpec, ref: str, *, grace_seconds: float = 5.0) -> None:
        from docker.errors import APIError, NotFound

        api = self.engine.api
        with engine_errors("container stop"):
            try:
                info = api.inspect_container(ref)
            except NotFound:
                return  # already gone
            labels = info["Config"].get("Labels") or {}
            by_key, by_name = keys_of({spec.name: spec})
            if (labels.get(f"{LABEL}.namespace") != console_namespace()
                    or match_key(by_key, by_name, labels.get(f"{LABEL}.service_id"), labels.get(f"{LABEL}.service"))
                    is None):
                return  # not ours: never touch a container another console or person runs
            try:
                if info["State"].get("Running"):
                    api.stop(ref, timeout=max(0, int(round(grace_seconds))))
                api.remove_container(ref, force=True)
            except NotFound:
                return
            except APIError as exc:
                if going_away(exc):
                    raise
                if exc.status_code == 409:  # removal already in progress
                    return
                raise DriverError(f"cannot stop container {ref}: {exc.explanation}") from exc

    def list_instances(self, spec: ServiceSpec) -> list[Observed]:
        return self._list({spec.name: spec})[spec.name]

    def list_all(self, specs: dict[str, ServiceSpec]) -> dict[str, list[Observed]]:
        """The containers of every named service from one list call by label (the controller's
        tick lists the engine once for the whole fleet)."""
        return self._list(specs)

    def _list(self, specs: dict[str, ServiceSpec]) -> dict[str, list[Observed]]:
        api = self.engine.api
        found: dict[str, list[Observed]] = {name: [] for name in specs}
        by_key, by_name = keys_of(specs)
        with engine_errors("container list"):
            rows = api.containers(all=True, filters=self._filters())
            node = self._node_name()
            for row in rows:
                labels = row.get("Labels") or {}
                listed = match_key(by_key, by_name, labels.get(f"{LABEL}.service_id"), labels.get(f"{LABEL}.service"))
                spec = specs[listed] if listed is not None else None
                if spec is None or "com.docker.swarm.task.id" in labels:
                    # A service this listing was not asked about, or a Swarm task's container (it
                    # carries our labels too, and only the swarm driver may count or remove it).
                    continue
                alive = row.get("State") == "running"
                ref = row["Id"][:12]
                port = next(
                    (
                        p.get("PublicPort")
                        for p in row.get("Ports") or []
                        if p.get("PrivatePort") == spec.port and p.get("PublicPort")
                    ),
                    None,
                )
                detail = ""
                started_at = datetime.fromtimestamp(row["Created"], tz=UTC) if row.get("Created") else None
                cpu = memory = None
                reported = self.deaths.get(ref)
                if reported is not None:
                    # The engine reported its death; it may still be listed running for a moment.
                    alive, detail = False, reported
                elif alive:
                    cpu, memory = self.stats.sample(row["Id"])
                else:
                    # Dead containers are rare and about to be replaced: one inspect for the cause.
                    try:
                        detail = describe_exit(api.inspect_container(row["Id"])["State"])
                    except Exception:
                        detail = row.get("Status", "exited")
                instance = labels.get(f"{LABEL}.instance", "")
                found[listed].append(
                    Observed(
                        ref=ref,
                        alive=alive,
                        host="127.0.0.1",
                        port=port,
                        node=node,
                        instance_id=int(instance) if instance.isdigit() else None,
                        started_at=started_at,
                        detail=detail,
                        cpu_percent=cpu,
                        memory_bytes=memory,
                        extra={
                            "spec_version": labels.get(f"{LABEL}.spec_version", ""),
                            "status": row.get("Status", ""),
                            "spare": labels.get(f"{LABEL}.role") == "spare",
                        },
                    )
                )
        return found

    def reported_death(self, ref: str) -> str | None:
        """Why the container ref died, if the engine's event stream reported its death (see watch)."""
        return self.deaths.get(ref)

    def set_replicas(self, spec: ServiceSpec, replicas: int) -> None:
        raise DriverError("the docker driver is imperative; reconcile starts and stops containers")

    def remove_service(self, spec: ServiceSpec) -> None:
        from docker.errors import NotFound

        api = self.engine.api
        by_key, by_name = keys_of({spec.name: spec})
        with engine_errors("container removal"):
            for row in api.containers(all=True, filters=self._filters()):
                labels = row.get("Labels") or {}
                if ("com.docker.swarm.task.id" in labels or match_key(
                        by_key, by_name, labels.get(f"{LABEL}.service_id"), labels.get(f"{LABEL}.service")) is None):
                    continue
                try:
                    api.remove_container(row["Id"], force=True)
                except NotFound:
                    pass

    def watch(self, on_death: Callable[[str], None]) -> None:
        """Call on_death(service key) whenever one of our containers dies (see watch_deaths)."""
        if self._watcher is None:
            self._watcher = watch_deaths(self.engine, on_death, driver=self.name, reports=self.deaths)

    # helpers
    _node: str = ""

    def _node_name(self) -> str:
        if not self._node:
            with engine_errors("info"):
                self._node = self.engine.api.info().get("Name", "") or "docker"
        return self._node
