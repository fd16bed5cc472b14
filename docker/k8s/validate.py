"""Rules for Larch's Kubernetes manifests, over the output of `kubectl kustomize`.

    python validate.py [--list-rules] RENDERED.yaml [DOCKERFILE]

Checks what a schema cannot: every container is locked down (non-root as the image's uid,
no privilege escalation, read-only root filesystem, no capabilities, RuntimeDefault seccomp),
has gRPC startup/readiness/liveness probes (HTTP ones on the admin port where it serves TLS)
and resource requests and limits; both planes serve TLS or neither, with https URLs between
them and certificate files from Secrets; each pod gets
the drain time it needs, the API key only as a mounted Secret and no Kubernetes API token; the
control plane keeps its catalog on a ReadWriteMany volume shared by its replicas (or is one
replica replaced with Recreate); the data plane's headless Service and
the URLs between the planes name objects that exist; a PodDisruptionBudget covers both planes;
and no Secret is rendered. On a bucket (s3 mode: LARCH_OBJECT_STORE_URL, the s3 overlay): the
data plane has at least two pods (one writes each index, the others follow it and forward writes
to it), no volume claims, each pod's name and IP from the downward API (the IP is where its
followers forward writes), the
control plane names every data-plane pod (LARCH_DATA_PLANE_URLS) and runs at least two
replicas without a volume, and every pod gets the bucket's URL and the object-store Secret
(AWS_* keys only, the one Secret allowed). Then it breaks the manifests in the ways these rules guard against
and checks that each breakage is caught, so a rule cannot silently stop working.

Prints every problem (and with --list-rules each rule it applied); exits 1 if there is any. Needs PyYAML (a
dependency of kubernetes-validate, in the same virtualenv).
"""

import copy
import re
import sys
from urllib.parse import urlsplit

import yaml

# The image's user (docker/Dockerfile: `USER 65532:65532`), used when no Dockerfile is given.
IMAGE_UID = 65532
# Minimum time a startup probe must allow (seconds): write-ahead-log replay of big indexes.
MIN_STARTUP_SECONDS = 300
# Seconds Larch drains by default (LARCH_DRAIN_TIMEOUT_SECS) and the margin the kubelet must add.
DEFAULT_DRAIN_SECONDS = 20
GRACE_MARGIN_SECONDS = 5
KEY_SECRET = "larch-api-key"
# s3 mode: the bucket's URL, and the prefix of object_store's standard variables, which only the
# object-store Secret may hold.
OBJECT_STORE_URL = "LARCH_OBJECT_STORE_URL"
AWS_PREFIX = "AWS_"
AWS_REQUIRED = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
COMMANDS = {"Deployment": "control-plane", "StatefulSet": "data-plane"}


def image_uid(dockerfile):
    """The numeric uid of the last `USER uid[:gid]` in `dockerfile`."""
    uid = None
    with open(dockerfile, encoding="utf-8") as f:
        for line in f:
            match = re.match(r"\s*USER\s+(\d+)(?::\d+)?\s*$", line)
            if match:
                uid = int(match.group(1))
    if uid is None:
        raise SystemExit(f"validate.py: no numeric USER in {dockerfile}")
    return uid


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


class Rules:
    def __init__(self, objects, uid):
        self.objects = [o for o in objects if o]
        self.uid = uid
        self.problems = []
        self.applied = []
        # s3 mode: some plane is given a bucket (the s3 overlay).
        self.s3 = any(OBJECT_STORE_URL in self.config("probe", c, quiet=True)
                      for w in self.of_kind("Deployment") + self.of_kind("StatefulSet")
                      for c in w["spec"]["template"]["spec"]["containers"])

    def problem(self, where, message):
        self.problems.append(f"{where}: {message}")

    def rule(self, description):
        self.applied.append(description)

    def of_kind(self, kind):
        return [o for o in self.objects if o.get("kind") == kind]

    def config(self, pod, container, quiet=False):
        """The container's environment: its ConfigMaps (envFrom), then its own `env`."""
        env = {}
        maps = {o["metadata"]["name"]: o.get("data", {}) for o in self.of_kind("ConfigMap")}
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef")
            if ref:
                if ref["name"] not in maps and not quiet:
                    self.problem(pod, f"envFrom names ConfigMap {ref['name']}, which is not rendered")
                env.update(maps.get(ref["name"], {}))
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = var["value"]
        return env

    def check(self):
        workloads = self.of_kind("Deployment") + self.of_kind("StatefulSet")
        services = self.of_kind("Service")
        self.rule("the control plane (Deployment) and the data plane (StatefulSet) are rendered")
        if not self.of_kind("Deployment") or not self.of_kind("StatefulSet"):
            self.problem("manifests", "need a control-plane Deployment and a data-plane StatefulSet")
        self.rule("no Secret is rendered (the admin key is created with kubectl, never in manifests), "
                  "but in s3 mode the object-store Secret the pods take AWS_* variables from")
        store_secrets = self.object_store_secrets(workloads) if self.s3 else set()
        for secret in self.of_kind("Secret"):
            if secret["metadata"]["name"] not in store_secrets:
                self.problem(f"Secret/{secret['metadata']['name']}", "a Secret in the manifests")
        if self.s3:
            self.check_object_store(workloads)
        for workload in workloads:
            self.check_workload(workload, services)
        for service in services:
            self.check_service(service, workloads)
        self.check_urls(workloads, services)
        self.check_tls(workloads)
        return self.problems

    def check_workload(self, workload, services):
        kind, name = workload["kind"], workload["metadata"]["name"]
        where = f"{kind}/{name}"
        spec = workload["spec"]
        template = spec["template"]
        pod = template["spec"]
        labels = template["metadata"].get("labels", {})
        pod_sc = pod.get("securityContext", {})

        if kind == "Deployment" and self.s3:
            self.rule("s3 mode, control plane: state in the bucket, so at least 2 replicas, no "
                      "LARCH_SHARED_STATE_DIR and no PersistentVolumeClaim")
            container = pod["containers"][0]
            env = self.config(where, container)
            if (spec.get("replicas") or 1) < 2:
                self.problem(where, f"replicas is {spec.get('replicas')} on a bucket, need at least 2")
            if env.get("LARCH_SHARED_STATE_DIR"):
                self.problem(where, "LARCH_SHARED_STATE_DIR beside LARCH_OBJECT_STORE_URL: the "
                                    "state is in the bucket")
            for volume in pod.get("volumes", []):
                if "persistentVolumeClaim" in volume:
                    self.problem(where, f"volume {volume['name']} is a PersistentVolumeClaim on a "
                                        "bucket (no ReadWriteMany volume in s3 mode)")
        elif kind == "Deployment":
            self.rule("control plane: several replicas or rolling updates only with "
                      "LARCH_SHARED_STATE_DIR on a ReadWriteMany volume; otherwise one replica "
                      "with strategy Recreate (data-dir lock)")
            container = pod["containers"][0]
            env = self.config(where, container)
            shared = env.get("LARCH_SHARED_STATE_DIR")
            single = spec.get("replicas") == 1 and spec.get("strategy", {}).get("type") == "Recreate"
            if shared:
                claim = self.volume_claim(pod, container, shared)
                if claim is None:
                    self.problem(where, f"LARCH_SHARED_STATE_DIR ({shared}) is not a mounted "
                                        "PersistentVolumeClaim")
                elif not single and "ReadWriteMany" not in claim["spec"].get("accessModes", []):
                    self.problem(where, f"claim {claim['metadata']['name']} must be ReadWriteMany "
                                        "for several replicas or rolling updates")
            else:
                if spec.get("replicas") != 1:
                    self.problem(where, f"replicas is {spec.get('replicas')} without "
                                        "LARCH_SHARED_STATE_DIR, must be 1")
                if spec.get("strategy", {}).get("type") != "Recreate":
                    self.problem(where, "strategy must be Recreate without LARCH_SHARED_STATE_DIR")
        elif self.s3:
            self.rule("s3 mode, data plane: at least 2 pods (each index has one writer, the "
                      "others follow it), no volumeClaimTemplates, LARCH_POD_NAME "
                      "(metadata.name) and POD_IP (status.podIP) from the downward API, a "
                      "headless governing Service")
            if (spec.get("replicas") or 1) < 2:
                self.problem(where, f"replicas is {spec.get('replicas')} on a bucket, need at "
                                    "least 2: with one pod, its index is unwritable while the "
                                    "pod is replaced")
            if spec.get("volumeClaimTemplates"):
                self.problem(where, "volumeClaimTemplates on a bucket: s3-mode pods keep no volume")
            container = pod["containers"][0]
            named = [v for v in container.get("env", []) if v["name"] == "LARCH_POD_NAME"]
            field = named[0].get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") if named else None
            if field != "metadata.name":
                self.problem(where, "LARCH_POD_NAME must come from the downward API "
                                    "(fieldRef metadata.name): the control plane's URLs name pods")
            ip = [v for v in container.get("env", []) if v["name"] == "POD_IP"]
            ip_field = ip[0].get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") if ip else None
            advertised = any(v["name"] == "LARCH_ADVERTISE_URL" for v in container.get("env", []))
            if ip_field != "status.podIP" and not advertised:
                self.problem(where, "POD_IP must come from the downward API (fieldRef "
                                    "status.podIP), or LARCH_ADVERTISE_URL be set: followers "
                                    "forward writes to the address a writer advertises")
        else:
            self.rule("data plane: one replica, a volumeClaimTemplate, a headless governing Service")
            if spec.get("replicas") != 1:
                self.problem(where, f"replicas is {spec.get('replicas')}, must be 1")
            if not spec.get("volumeClaimTemplates"):
                self.problem(where, "no volumeClaimTemplates")
        if kind == "StatefulSet":
            governing = [s for s in services if s["metadata"]["name"] == spec.get("serviceName")]
            if not governing:
                self.problem(where, f"serviceName {spec.get('serviceName')!r} is not a rendered Service")
            for service in governing:
                if service["spec"].get("clusterIP") != "None":
                    self.problem(where, f"Service {service['metadata']['name']} is not headless")
                if not service["spec"].get("publishNotReadyAddresses"):
                    self.problem(where, "its headless Service must publish not-ready addresses")
                if not selects(service["spec"].get("selector"), labels):
                    self.problem(where, f"Service {service['metadata']['name']} does not select its pods")

        self.rule("pods: no service-account token, no service links, fsGroup = the image's gid")
        if pod.get("automountServiceAccountToken") is not False:
            self.problem(where, "automountServiceAccountToken must be false")
        if pod.get("enableServiceLinks") is not False:
            self.problem(where, "enableServiceLinks must be false (LARCH_* variables)")
        if pod_sc.get("fsGroup") != self.uid:
            self.problem(where, f"securityContext.fsGroup must be {self.uid}")

        self.rule("pods: a PodDisruptionBudget selects them")
        budgets = [p for p in self.of_kind("PodDisruptionBudget")
                   if selects(p["spec"].get("selector", {}).get("matchLabels"), labels)]
        if len(budgets) != 1:
            self.problem(where, f"{len(budgets)} PodDisruptionBudgets select its pods, need exactly 1")
        replicas = spec.get("replicas") or 1
        for budget in budgets:
            unavailable = budget["spec"].get("maxUnavailable")
            available = budget["spec"].get("minAvailable")
            if replicas > 1 and isinstance(unavailable, int) and unavailable >= replicas:
                self.problem(where, f"its budget lets all {replicas} pods go at once "
                                    f"(maxUnavailable {unavailable})")
            if replicas > 1 and available == 0:
                self.problem(where, "its budget lets all pods go at once (minAvailable 0)")

        annotations = template["metadata"].get("annotations", {})
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod.get("initContainers", []):
            self.check_security(f"{where} initContainer {container['name']}", container, pod_sc)
        for container in pod["containers"]:
            cwhere = f"{where} container {container['name']}"
            self.check_security(cwhere, container, pod_sc)
            self.check_container(cwhere, kind, workload, container, annotations, volumes)

    def volume_claim(self, pod, container, path):
        """The rendered PersistentVolumeClaim mounted at `path`, or None."""
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        claims = {c["metadata"]["name"]: c for c in self.of_kind("PersistentVolumeClaim")}
        for mount in container.get("volumeMounts", []):
            claim = volumes.get(mount["name"], {}).get("persistentVolumeClaim", {}).get("claimName")
            if mount["mountPath"] == path and claim in claims:
                return claims[claim]
        return None

    def check_security(self, where, container, pod_sc):
        self.rule("containers: runAsNonRoot, runAsUser = the image's uid, no privilege escalation, "
                  "read-only root filesystem, capabilities drop ALL, seccomp RuntimeDefault")
        sc = container.get("securityContext", {})

        def effective(key):
            return sc.get(key, pod_sc.get(key))

        if effective("runAsNonRoot") is not True:
            self.problem(where, "runAsNonRoot must be true")
        if effective("runAsUser") != self.uid:
            self.problem(where, f"runAsUser must be {self.uid} (the image's uid)")
        if sc.get("allowPrivilegeEscalation") is not False:
            self.problem(where, "allowPrivilegeEscalation must be false")
        if sc.get("readOnlyRootFilesystem") is not True:
            self.problem(where, "readOnlyRootFilesystem must be true")
        if sc.get("privileged"):
            self.problem(where, "privileged")
        capabilities = sc.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            self.problem(where, "capabilities must drop ALL")
        if capabilities.get("add"):
            self.problem(where, f"adds capabilities {capabilities['add']}")
        if (effective("seccompProfile") or {}).get("type") != "RuntimeDefault":
            self.problem(where, "seccompProfile must be RuntimeDefault")

    def check_container(self, where, kind, workload, container, annotations, volumes):
        env = self.config(where, container)
        ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        pod = workload["spec"]["template"]["spec"]

        self.rule("containers: run the plane their workload is for")
        if container.get("args", [None])[0] != COMMANDS[kind]:
            self.problem(where, f"args must start with {COMMANDS[kind]!r}")

        self.rule("containers: named ports grpc and admin")
        if None in ports or "grpc" not in ports or "admin" not in ports:
            self.problem(where, "needs named container ports grpc and admin")

        tls = "LARCH_TLS_CERT" in env
        self.rule("containers: gRPC startup, readiness and liveness probes on the grpc port (with "
                  "TLS, which kubelet gRPC probes cannot speak: httpGet /readyz, /readyz, /healthz "
                  f"on the plain-HTTP admin port); startup allows at least {MIN_STARTUP_SECONDS} s")
        for probe, path in (("startupProbe", "/readyz"), ("readinessProbe", "/readyz"),
                            ("livenessProbe", "/healthz")):
            spec = container.get(probe)
            if not spec:
                self.problem(where, f"no {probe}")
                continue
            if tls:
                get = spec.get("httpGet", {})
                if get.get("path") != path or get.get("port") not in ("admin", ports.get("admin")) \
                        or get.get("scheme", "HTTP") != "HTTP" or "grpc" in spec:
                    self.problem(where, f"{probe} must be httpGet {path} on the admin port (the "
                                        "gRPC port serves TLS)")
            elif spec.get("grpc", {}).get("port") != ports.get("grpc"):
                self.problem(where, f"{probe} must be a gRPC probe on port {ports.get('grpc')}")
        startup = container.get("startupProbe") or {}
        budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
        if budget < MIN_STARTUP_SECONDS:
            self.problem(where, f"startupProbe allows {budget} s, less than {MIN_STARTUP_SECONDS} s")

        self.rule("containers: cpu and memory requests and limits")
        resources = container.get("resources", {})
        for part in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in resources.get(part, {}):
                    self.problem(where, f"no {resource} in resources.{part}")

        self.rule("pods: terminationGracePeriodSeconds >= LARCH_DRAIN_TIMEOUT_SECS + "
                  f"{GRACE_MARGIN_SECONDS}")
        drain = int(env.get("LARCH_DRAIN_TIMEOUT_SECS", DEFAULT_DRAIN_SECONDS))
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if grace < drain + GRACE_MARGIN_SECONDS:
            self.problem(where, f"terminationGracePeriodSeconds {grace} leaves no margin over "
                                f"the drain timeout ({drain} s)")

        self.rule("containers: the admin key only as a file from Secret larch-api-key; data dir "
                  "on a volume")
        if "LARCH_API_KEY" in env or any(v["name"] == "LARCH_API_KEY" for v in container.get("env", [])):
            self.problem(where, "LARCH_API_KEY is set: give the key as a file (LARCH_API_KEY_FILE)")
        key_file = env.get("LARCH_API_KEY_FILE", "")
        mounts = container.get("volumeMounts", [])
        key_mounts = [m for m in mounts
                      if volumes.get(m["name"], {}).get("secret", {}).get("secretName") == KEY_SECRET]
        if not any(key_file.startswith(m["mountPath"].rstrip("/") + "/") for m in key_mounts):
            self.problem(where, f"LARCH_API_KEY_FILE ({key_file or 'unset'}) is not in a mount "
                                f"of Secret {KEY_SECRET}")
        claims = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        claims |= {name for name, v in volumes.items() if "persistentVolumeClaim" in v}
        data_dir = env.get("LARCH_DATA_DIR", "")
        if self.s3:
            # Scratch: the durable state is in the bucket (index data moves there with the
            # object log); a claim would tie each pod to one node's volume.
            if not any(m["mountPath"] == data_dir and m["name"] in volumes for m in mounts):
                self.problem(where, f"LARCH_DATA_DIR ({data_dir or 'unset'}) is not a mounted volume")
            elif any(m["mountPath"] == data_dir and m["name"] in claims for m in mounts):
                self.problem(where, f"LARCH_DATA_DIR ({data_dir}) is a persistent volume claim on a bucket")
        elif env.get("LARCH_SHARED_STATE_DIR"):
            # The state is in the shared dir; the data dir holds a lock and the admin key's hash.
            if not any(m["mountPath"] == data_dir for m in mounts):
                self.problem(where, f"LARCH_DATA_DIR ({data_dir or 'unset'}) is not a mounted volume")
        elif not any(m["mountPath"] == data_dir and m["name"] in claims for m in mounts):
            self.problem(where, f"LARCH_DATA_DIR ({data_dir or 'unset'}) is not a persistent volume")

        self.rule("pods: Prometheus scrape annotations for the admin port")
        if (annotations.get("prometheus.io/scrape") != "true"
                or annotations.get("prometheus.io/path") != "/metrics"
                or annotations.get("prometheus.io/port") != str(ports.get("admin"))):
            self.problem(where, "needs prometheus.io/scrape, /path and /port (the admin port)")

    def check_service(self, service, workloads):
        where = f"Service/{service['metadata']['name']}"
        self.rule("Services: select a workload's pods; named ports; appProtocol grpc on gRPC "
                  "ports and http on admin ports")
        targets = [w for w in workloads
                   if selects(service["spec"].get("selector"), w["spec"]["template"]["metadata"].get("labels", {}))]
        if not targets:
            self.problem(where, "selects no workload's pods")
        for port in service["spec"].get("ports", []):
            if not port.get("name"):
                self.problem(where, f"port {port['port']} has no name")
            expected = {"grpc": "grpc", "admin": "http"}.get(port.get("targetPort"))
            if expected is None:
                self.problem(where, f"port {port.get('name')} must target the container port grpc or admin by name")
            elif port.get("appProtocol") != expected:
                self.problem(where, f"port {port.get('name')} needs appProtocol {expected}")

    def check_urls(self, workloads, services):
        self.rule("ConfigMap: LARCH_DATA_PLANE_URL names the data-plane pod through its headless "
                  "Service, LARCH_CONTROL_PLANE_URL a Service of the control plane, on their gRPC "
                  "ports; LARCH_HOST_TEMPLATE has {index} and {project}")
        by_kind = {w["kind"]: w for w in workloads}
        control, data = by_kind.get("Deployment"), by_kind.get("StatefulSet")
        if not control or not data:
            return
        env = self.config("control plane", control["spec"]["template"]["spec"]["containers"][0])
        data_env = self.config("data plane", data["spec"]["template"]["spec"]["containers"][0])

        def grpc_port(workload):
            ports = workload["spec"]["template"]["spec"]["containers"][0].get("ports", [])
            return next((p["containerPort"] for p in ports if p.get("name") == "grpc"), None)

        replicas = data["spec"].get("replicas") or 1
        pods = [f"{data['metadata']['name']}-{i}.{data['spec'].get('serviceName')}"
                for i in range(replicas)]
        if "LARCH_DATA_PLANE_URLS" in env:
            self.rule("ConfigMap: LARCH_DATA_PLANE_URLS lists every data-plane pod (one per "
                      "replica, in order) through its headless Service on the gRPC port, and "
                      "replaces LARCH_DATA_PLANE_URL")
            urls = [urlsplit(u.strip()) for u in env["LARCH_DATA_PLANE_URLS"].split(",") if u.strip()]
            named = [(u.hostname or "").split(".")[:2] for u in urls]
            if named != [p.split(".") for p in pods] or any(u.port != grpc_port(data) for u in urls):
                self.problem("LARCH_DATA_PLANE_URLS", f"{env['LARCH_DATA_PLANE_URLS']!r} is not "
                                                      f"{', '.join(f'{p}:{grpc_port(data)}' for p in pods)}")
            if "LARCH_DATA_PLANE_URL" in env:
                self.problem("LARCH_DATA_PLANE_URL", "set beside LARCH_DATA_PLANE_URLS, which "
                                                     "wins: remove it")
        else:
            if replicas > 1:
                self.problem("LARCH_DATA_PLANE_URL", f"the data plane has {replicas} pods but the "
                                                     "control plane names one: list them all in "
                                                     "LARCH_DATA_PLANE_URLS")
            url = urlsplit(env.get("LARCH_DATA_PLANE_URL", ""))
            if url.hostname is None or url.hostname.split(".")[:2] != pods[0].split(".") \
                    or url.port != grpc_port(data):
                self.problem("LARCH_DATA_PLANE_URL", f"{env.get('LARCH_DATA_PLANE_URL')!r} is not "
                                                     f"{pods[0]}:{grpc_port(data)}")
        url = urlsplit(data_env.get("LARCH_CONTROL_PLANE_URL", ""))
        labels = control["spec"]["template"]["metadata"].get("labels", {})
        ok = [s for s in services
              if url.hostname and s["metadata"]["name"] == url.hostname.split(".")[0]
              and selects(s["spec"].get("selector"), labels)
              and any(p["port"] == url.port and p.get("targetPort") == "grpc" for p in s["spec"]["ports"])]
        if not ok:
            self.problem("LARCH_CONTROL_PLANE_URL", f"{data_env.get('LARCH_CONTROL_PLANE_URL')!r} is "
                                                    "not a Service on the control plane's gRPC port")
        template = env.get("LARCH_HOST_TEMPLATE", "")
        if "{index}" not in template or "{project}" not in template:
            self.problem("LARCH_HOST_TEMPLATE", f"{template!r} lacks {{index}} or {{project}}")

    def object_store_secrets(self, workloads):
        """The Secrets the pods take environment variables from (envFrom secretRef)."""
        return {source["secretRef"]["name"]
                for w in workloads for c in w["spec"]["template"]["spec"]["containers"]
                for source in c.get("envFrom", []) if "secretRef" in source}

    def check_object_store(self, workloads):
        self.rule("s3 mode: every pod gets the same LARCH_OBJECT_STORE_URL (s3://…) and its AWS_* "
                  "variables from a rendered Secret (envFrom) holding only AWS_* keys, with "
                  "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; no AWS_* in ConfigMaps or env values")
        secrets = {o["metadata"]["name"]: o for o in self.of_kind("Secret")}
        urls = set()
        checked = set()  # Secrets whose keys were checked (both planes name the same one)
        for workload in workloads:
            where = f"{workload['kind']}/{workload['metadata']['name']}"
            for container in workload["spec"]["template"]["spec"]["containers"]:
                env = self.config(where, container, quiet=True)
                url = env.get(OBJECT_STORE_URL, "")
                urls.add(url)
                if not url.startswith("s3://") or len(url) <= len("s3://"):
                    self.problem(where, f"{OBJECT_STORE_URL} ({url or 'unset'}) is not an s3:// URL")
                for name in env:
                    if name.startswith(AWS_PREFIX):
                        self.problem(where, f"{name} in a ConfigMap or env value: object-store "
                                            "settings come from the object-store Secret")
                refs = [s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s]
                if not refs:
                    self.problem(where, "no object-store Secret (envFrom secretRef) for its AWS_* variables")
                for ref in refs:
                    secret = secrets.get(ref)
                    if secret is None:
                        self.problem(where, f"envFrom names Secret {ref}, which is not rendered")
                        continue
                    if ref in checked:
                        continue
                    checked.add(ref)
                    keys = set(secret.get("data", {})) | set(secret.get("stringData", {}))
                    for key in sorted(keys):
                        if not key.startswith(AWS_PREFIX):
                            self.problem(f"Secret/{ref}", f"holds {key}: only AWS_* keys belong "
                                                          "in the object-store Secret")
                    for key in AWS_REQUIRED:
                        if key not in keys:
                            self.problem(f"Secret/{ref}", f"lacks {key}")
        if len(urls) > 1:
            self.problem(OBJECT_STORE_URL, f"the planes are given different buckets: {sorted(urls)}")

    def secret_file(self, pod, container, path):
        """The Secret whose mount holds file `path`, or None."""
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            secret = volumes.get(mount["name"], {}).get("secret", {}).get("secretName")
            if secret and path.startswith(mount["mountPath"].rstrip("/") + "/"):
                return secret
        return None

    def check_tls(self, workloads):
        self.rule("TLS: both planes or neither serve it (their calls carry the admin key); cert, "
                  "key and CA files come from a mounted Secret; the URLs between the planes are "
                  "https to a TLS plane; a rendered cert-manager Certificate writes that Secret "
                  "and names both URLs' hosts")
        by_kind = {w["kind"]: w for w in workloads}
        if set(by_kind) != {"Deployment", "StatefulSet"}:
            return
        plane = {}
        for kind, workload in by_kind.items():
            pod = workload["spec"]["template"]["spec"]
            container = pod["containers"][0]
            env = self.config(kind, container)
            secrets = {}
            for var in ("LARCH_TLS_CERT", "LARCH_TLS_KEY", "LARCH_TLS_CA"):
                if var in env:
                    secrets[var] = self.secret_file(pod, container, env[var])
                    if secrets[var] is None:
                        self.problem(f"{kind}/{workload['metadata']['name']}",
                                     f"{var} ({env[var]}) is not in a mounted Secret")
            plane[kind] = (env, secrets)
        (control_env, control_secrets), (data_env, data_secrets) = plane["Deployment"], plane["StatefulSet"]
        if ("LARCH_TLS_CERT" in control_env) != ("LARCH_TLS_CERT" in data_env):
            self.problem("TLS", "only one plane serves TLS: the other's calls would carry the admin key in clear")
        data_url_var = "LARCH_DATA_PLANE_URLS" if "LARCH_DATA_PLANE_URLS" in control_env \
            else "LARCH_DATA_PLANE_URL"
        calls = [(data_url_var, u.strip(), control_env, data_env)
                 for u in control_env.get(data_url_var, "").split(",")]
        calls.append(("LARCH_CONTROL_PLANE_URL", data_env.get("LARCH_CONTROL_PLANE_URL", ""),
                      data_env, control_env))
        for url_var, raw, caller_env, server_env in calls:
            url = urlsplit(raw)
            if "LARCH_TLS_CERT" in server_env:
                if url.scheme != "https":
                    self.problem(url_var, f"{raw!r} must be https: that plane serves TLS")
                if "LARCH_TLS_CA" not in caller_env:
                    self.problem(url_var, "its caller has no LARCH_TLS_CA to verify the certificate with")
            elif url.scheme == "https":
                self.problem(url_var, f"{raw!r} is https but that plane serves no TLS")
        hosts = [urlsplit(raw).hostname for _, raw, _, _ in calls]
        served = {s.get("LARCH_TLS_CERT") for _, s in plane.values()} - {None}
        issued = {c.get("spec", {}).get("secretName") for c in self.of_kind("Certificate")}
        if self.of_kind("Certificate") and served - issued:
            self.problem("TLS", f"no rendered Certificate writes Secret {sorted(served - issued)}, "
                                "which the planes serve with")
        for certificate in self.of_kind("Certificate"):
            spec = certificate.get("spec", {})
            if spec.get("isCA") or spec.get("secretName") not in served:
                continue
            names = spec.get("dnsNames", [])
            for host in hosts:
                if host and host not in names:
                    self.problem(f"Certificate/{certificate['metadata']['name']}",
                                 f"dnsNames lack {host}, which the other plane dials")


def find(objects, kind):
    return next(o for o in objects if o.get("kind") == kind)


def container(objects, kind):
    return find(objects, kind)["spec"]["template"]["spec"]["containers"][0]


def config_data(objects):
    return find(objects, "ConfigMap")["data"]


def tls_env(objects, kind):
    return [v for v in container(objects, kind)["env"] if v["name"].startswith("LARCH_TLS_")]


def has_tls(objects):
    return bool(tls_env(objects, "StatefulSet"))


# Breakages the rules must catch: (description, text of the problem that must be reported,
# function changing the objects in place). Those in TLS_BREAKAGES apply only to manifests
# where the planes serve TLS (the example overlay).
BREAKAGES = [
    ("writable root filesystem", "readOnlyRootFilesystem", lambda o: container(o, "StatefulSet")["securityContext"]
        .update(readOnlyRootFilesystem=False)),
    ("a capability kept", "drop ALL", lambda o: container(o, "Deployment")["securityContext"]
        .update(capabilities={"drop": ["NET_RAW"]})),
    ("privilege escalation allowed", "allowPrivilegeEscalation", lambda o: container(o, "Deployment")["securityContext"]
        .pop("allowPrivilegeEscalation")),
    ("running as root", "runAsUser", lambda o: container(o, "Deployment")["securityContext"]
        .update(runAsUser=0)),
    ("seccomp unconfined", "seccompProfile", lambda o: container(o, "StatefulSet")["securityContext"]
        .update(seccompProfile={"type": "Unconfined"})),
    ("no startup probe", "no startupProbe", lambda o: container(o, "StatefulSet").pop("startupProbe")),
    ("a short startup probe", "startupProbe allows", lambda o: container(o, "StatefulSet")["startupProbe"]
        .update(failureThreshold=3)),
    ("an HTTP liveness probe without TLS", "livenessProbe must be", lambda o: [container(o, "Deployment").update(
        livenessProbe={"httpGet": {"path": "/healthz", "port": 9090}}), container(o, "Deployment").update(
        env=[v for v in container(o, "Deployment")["env"] if not v["name"].startswith("LARCH_TLS_")])]),
    ("no memory limit", "no memory in resources.limits", lambda o: container(o, "Deployment")["resources"]["limits"].pop("memory")),
    ("grace period shorter than the drain", "terminationGracePeriodSeconds", lambda o: config_data(o)
        .update(LARCH_DRAIN_TIMEOUT_SECS="60")),
    ("a Secret in the manifests", "a Secret in the manifests", lambda o: o.append(
        {"kind": "Secret", "metadata": {"name": KEY_SECRET}, "data": {"api-key": "eA=="}})),
    ("the key in the environment", "LARCH_API_KEY is set", lambda o: container(o, "Deployment")["env"].append(
        {"name": "LARCH_API_KEY", "value": "x"})),
    ("a renamed headless Service", "serviceName", lambda o: find(o, "StatefulSet")["spec"]
        .update(serviceName="larch-data-headless")),
    ("no PodDisruptionBudget", "PodDisruptionBudgets select", lambda o: o.remove(find(o, "PodDisruptionBudget"))),
    ("a gRPC port without appProtocol", "needs appProtocol grpc", lambda o: find(o, "Service")["spec"]["ports"][0]
        .pop("appProtocol")),
    ("service-account token mounted", "automountServiceAccountToken", lambda o: find(o, "StatefulSet")["spec"]["template"]["spec"]
        .update(automountServiceAccountToken=True)),
]


def data_urls(objects):
    return config_data(objects)["LARCH_DATA_PLANE_URLS"].split(",")


def object_store_secret(objects):
    return next(o for o in objects if o.get("kind") == "Secret")


# Breakages of the local-disk layout only (base, example overlay).
LOCAL_BREAKAGES = [
    ("two control-plane replicas without shared state", "replicas is 2", lambda o: container(o, "Deployment")
        .update(env=[v for v in container(o, "Deployment")["env"] if v["name"] != "LARCH_SHARED_STATE_DIR"])),
    ("shared state on a ReadWriteOnce volume", "must be ReadWriteMany", lambda o: find(o, "PersistentVolumeClaim")
        ["spec"].update(accessModes=["ReadWriteOnce"])),
    ("shared state on the pod's own emptyDir", "not a mounted PersistentVolumeClaim", lambda o: [
        v.update(value="/data") for v in container(o, "Deployment")["env"] if v["name"] == "LARCH_SHARED_STATE_DIR"]),
    ("a data-plane URL on the wrong port", "LARCH_DATA_PLANE_URL", lambda o: config_data(o)
        .update(LARCH_DATA_PLANE_URL="http://larch-data-0.larch-data:5080")),
    ("two data-plane pods on local disks", "replicas is 2", lambda o: find(o, "StatefulSet")["spec"]
        .update(replicas=2)),
]


# Breakages of s3 mode (the s3 overlay).
S3_BREAKAGES = [
    ("one data-plane pod on a bucket", "need at least 2", lambda o: find(o, "StatefulSet")
        ["spec"].update(replicas=1)),
    ("a data plane that advertises no address", "POD_IP must come", lambda o: container(o, "StatefulSet")
        .update(env=[v for v in container(o, "StatefulSet")["env"] if v["name"] != "POD_IP"])),
    ("a volume claim on an s3 data plane", "volumeClaimTemplates on a bucket", lambda o: find(o, "StatefulSet")
        ["spec"].update(volumeClaimTemplates=[{"metadata": {"name": "data"}, "spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}])),
    ("one control-plane replica on a bucket", "need at least 2", lambda o: find(o, "Deployment")["spec"]
        .update(replicas=1)),
    ("a shared volume on a bucket", "PersistentVolumeClaim on a bucket", lambda o: find(o, "Deployment")
        ["spec"]["template"]["spec"]["volumes"].append({"name": "state", "persistentVolumeClaim": {"claimName": "x"}})),
    ("a data plane without the object-store Secret", "no object-store Secret", lambda o: container(o, "StatefulSet")
        .update(envFrom=[s for s in container(o, "StatefulSet")["envFrom"] if "secretRef" not in s])),
    ("a plane without the bucket's URL", "is not an s3:// URL", lambda o: container(o, "Deployment")["env"].append(
        {"name": OBJECT_STORE_URL, "value": ""})),
    ("the planes on different buckets", "different buckets", lambda o: container(o, "StatefulSet")["env"].append(
        {"name": OBJECT_STORE_URL, "value": "s3://another-bucket/larch"})),
    ("credentials in the ConfigMap", "in a ConfigMap or env value", lambda o: config_data(o)
        .update(AWS_SECRET_ACCESS_KEY="x")),
    ("the admin key in the object-store Secret", "only AWS_* keys", lambda o: object_store_secret(o)["data"]
        .update(LARCH_API_KEY="eA==")),
    ("an object-store Secret without a secret key", "lacks AWS_SECRET_ACCESS_KEY", lambda o: object_store_secret(o)
        ["data"].pop("AWS_SECRET_ACCESS_KEY")),
    ("a data-plane pod missing from the URL list", "LARCH_DATA_PLANE_URLS", lambda o: config_data(o)
        .update(LARCH_DATA_PLANE_URLS=",".join(data_urls(o)[:-1]))),
    ("a data-plane URL list on the wrong port", "LARCH_DATA_PLANE_URLS", lambda o: config_data(o)
        .update(LARCH_DATA_PLANE_URLS=",".join(u.replace(":5081", ":5080") for u in data_urls(o)))),
    ("the single URL beside the list", "set beside LARCH_DATA_PLANE_URLS", lambda o: config_data(o)
        .update(LARCH_DATA_PLANE_URL="http://larch-data-0.larch-data:5081")),
    ("a pod name not from the downward API", "LARCH_POD_NAME must come", lambda o: container(o, "StatefulSet")
        .update(env=[v for v in container(o, "StatefulSet")["env"] if v["name"] != "LARCH_POD_NAME"])),
    ("a control-plane budget letting both replicas go", "lets all 2 pods go", lambda o: [
        p["spec"].update(maxUnavailable=2) for p in o
        if p.get("kind") == "PodDisruptionBudget" and p["metadata"]["name"] == "larch-control"]),
    ("a data dir on a claim on a bucket", "persistent volume claim on a bucket", lambda o: [
        v.update(persistentVolumeClaim={"claimName": "x"}) or v.pop("emptyDir")
        for v in find(o, "StatefulSet")["spec"]["template"]["spec"]["volumes"] if v["name"] == "data"]),
]


TLS_BREAKAGES = [
    ("a gRPC probe on a TLS port", "readinessProbe must be httpGet", lambda o: container(o, "StatefulSet").update(
        readinessProbe={"grpc": {"port": 5081}})),
    ("TLS on one plane only", "only one plane serves TLS", lambda o: container(o, "Deployment").update(
        env=[v for v in container(o, "Deployment")["env"] if not v["name"].startswith("LARCH_TLS_")])),
    ("an http URL to a TLS plane", "must be https", lambda o: config_data(o)
        .update(LARCH_DATA_PLANE_URL=config_data(o)["LARCH_DATA_PLANE_URL"].replace("https:", "http:"))),
    ("a certificate file outside a Secret", "not in a mounted Secret", lambda o: tls_env(o, "Deployment")[0]
        .update(value="/data/tls.crt")),
    ("a certificate for another Secret", "no rendered Certificate writes", lambda o: [
        c["spec"].update(secretName="other") for c in o
        if c.get("kind") == "Certificate" and not c["spec"].get("isCA")]),
    ("a certificate without the data plane's name", "dnsNames lack", lambda o: [
        c["spec"].update(dnsNames=["larch-control"]) for c in o
        if c.get("kind") == "Certificate" and not c["spec"].get("isCA")]),
]


def main():
    flags = [a for a in sys.argv[1:] if a.startswith("--")]
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) not in (1, 2) or set(flags) - {"--list-rules"}:
        raise SystemExit(__doc__)
    with open(args[0], encoding="utf-8") as f:
        objects = list(yaml.safe_load_all(f))
    uid = image_uid(args[1]) if len(args) == 2 else IMAGE_UID
    rules = Rules(objects, uid)
    problems = rules.check()
    if "--list-rules" in flags:
        for description in dict.fromkeys(rules.applied):
            print(f"  rule: {description}")
    for problem in problems:
        print(f"  PROBLEM: {problem}")
    missed = []
    breakages = BREAKAGES + (S3_BREAKAGES if rules.s3 else LOCAL_BREAKAGES) \
        + (TLS_BREAKAGES if has_tls(objects) else [])
    for description, expected, breakage in breakages:
        broken = copy.deepcopy(objects)
        breakage(broken)
        if not any(expected in problem for problem in Rules(broken, uid).check()):
            missed.append(f"{description} (no problem saying {expected!r})")
    print(f"  self-test: {len(breakages) - len(missed)} of {len(breakages)} breakages caught"
          + "".join(f"\n  SELF-TEST MISSED: {m}" for m in missed))
    print(f"  {len(dict.fromkeys(rules.applied))} rules over {len(rules.objects)} objects, "
          f"image uid {uid}: " + ("ok" if not problems and not missed else f"{len(problems)} problems"))
    return 1 if problems or missed else 0


if __name__ == "__main__":
    sys.exit(main())
