"""Static checks of the deployment files (docker/): no container engine exists on the development and
CI machines, so nothing here is built or run; these tests parse the files and hold them to the code.

Each test reads the files from ROOT (the repository root), so any of them fails when a file, a path,
a setting name, a probe, a port or an image tag goes wrong.
"""
from __future__ import annotations

import dataclasses
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from cds_service.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
K8S = DOCKER / "k8s"
K8S_FILES = ("configmap.yaml", "secret.example.yaml", "deployment.yaml", "service.yaml", "hpa.yaml",
             "ingress.yaml")

SETTING_VARS = {"CDS_" + f.name.upper() for f in dataclasses.fields(Settings)}
CDS_VAR = re.compile(r"\bCDS_[A-Z0-9_]+\b")


# ---------------------------------------------------------------- loading

def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), "compose.yaml has no services"
    return data


def k8s_docs() -> list[dict[str, Any]]:
    docs = []
    for name in K8S_FILES:
        path = K8S / name
        assert path.is_file(), f"docker/k8s/{name} is missing"
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                assert isinstance(doc, dict) and "kind" in doc, f"{name}: a document without kind"
                assert "namespace" not in doc.get("metadata", {}), f"{name}: manifests must be namespace-less"
                doc["_file"] = name
                docs.append(doc)
    return docs


def one(kind: str) -> dict[str, Any]:
    found = [d for d in k8s_docs() if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} in docker/k8s, found {len(found)}"
    return found[0]


def cds_container() -> dict[str, Any]:
    containers = one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "the Deployment should have one container"
    return containers[0]


def container_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port (number or name) as the container's port number."""
    if isinstance(port, int):
        assert any(p["containerPort"] == port for p in container.get("ports", [])), f"port {port} not declared"
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    raise AssertionError(f"the container has no port named {port!r}")


def env_list(env: Any) -> dict[str, str]:
    """Compose environment as a dict (list form KEY=VALUE or mapping form)."""
    if env is None:
        return {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if not current and raw.lstrip().startswith("#"):
            continue
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        current += raw
        if current.strip():
            lines.append(current.strip())
        current = ""
    out = []
    for line in lines:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    return ":" in last and last.split(":", 1)[1] not in ("", "latest")


# ---------------------------------------------------------------- compose

def test_compose_has_the_services():
    services = load_compose()["services"]
    assert {"cds", "hapi", "hapi-load", "postgres", "redis"} <= set(services)


def test_compose_build_context_and_dockerfile_exist():
    build = load_compose()["services"]["cds"]["build"]
    context = (COMPOSE.parent / build["context"]).resolve()
    assert context == ROOT, f"the build context should be the repository root, is {context}"
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE.resolve()
    assert DOCKERFILE.is_file()


def test_compose_bind_mounts_exist():
    mounts = 0
    for name, svc in load_compose()["services"].items():
        for vol in svc.get("volumes", []):
            source = vol["source"] if isinstance(vol, dict) else vol.split(":", 1)[0]
            if source.startswith((".", "/")):
                mounts += 1
                assert (COMPOSE.parent / source).exists(), f"{name}: mounted {source} does not exist"
    assert mounts, "no bind mount found (hapi-load must mount fhir_samples/bundles)"


def test_hapi_load_mounts_every_bundle_read_only_and_posts_transactions():
    svc = load_compose()["services"]["hapi-load"]
    bundles = ROOT / "fhir_samples" / "bundles"
    mounts = [v.split(":") for v in svc.get("volumes", []) if isinstance(v, str)]
    match = [m for m in mounts if (COMPOSE.parent / m[0]).resolve() == bundles.resolve()]
    assert match, "hapi-load must mount fhir_samples/bundles"
    source, target, *mode = match[0]
    assert mode and "ro" in mode[0].split(","), "the bundles must be mounted read-only"
    script = " ".join(svc.get("command") or []) if isinstance(svc.get("command"), list) else str(svc.get("command"))
    assert f"{target}/*.json" in script, "hapi-load must post every bundle of the mounted folder"
    assert "http://hapi:8080/fhir" in script and "/metadata" in script and "POST" in script
    assert "$$" in script and not re.search(r"(?<!\$)\$(?![$])", script), \
        "every $ in a compose command must be written $$ (compose interpolates single $)"
    manifest = json.loads((ROOT / "fhir_samples" / "manifest.json").read_text(encoding="utf-8"))
    listed = {Path(s["bundle"]).name for s in manifest["scenarios"]}
    present = {p.name for p in bundles.glob("*.json")}
    assert listed == present, "manifest.json and fhir_samples/bundles disagree"
    for path in bundles.glob("*.json"):
        bundle = json.loads(path.read_text(encoding="utf-8"))
        assert bundle.get("resourceType") == "Bundle" and bundle.get("type") == "transaction", path.name
        assert all(e.get("request", {}).get("method") in ("PUT", "POST") for e in bundle["entry"]), path.name
    assert svc.get("restart", "no") == "no", "hapi-load is a one-shot container"


def test_compose_ports_bind_localhost_only():
    published = 0
    for name, svc in load_compose()["services"].items():
        for port in svc.get("ports", []):
            published += 1
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", f"{name}: {port} is not bound to 127.0.0.1"
            else:
                assert str(port).startswith("127.0.0.1:"), f"{name}: {port} is not bound to 127.0.0.1"
    assert published, "the cds port should be published (on 127.0.0.1)"


def test_compose_cds_environment():
    compose = load_compose()
    env = env_list(compose["services"]["cds"]["environment"])
    assert env["CDS_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "@postgres:" in env["CDS_DATABASE_URL"]
    assert env["CDS_REDIS_URL"].startswith("redis://redis:")
    assert env["CDS_FHIR_SERVER_ALLOWLIST"] == "http://hapi:8080/fhir"
    assert env["CDS_ALLOW_HTTP_FHIR"] == "true"
    assert env.get("CDS_SANDBOX_ISSUER") == "true" or env.get("CDS_TRUSTED_ISSUERS_FILE"), \
        "the service needs a trusted issuer (authentication stays on)"
    assert env.get("CDS_AUTH_DISABLED", "false") != "true"
    assert env["CDS_PUBLIC_BASE_URL"]
    # the URL clients call is the port nginx publishes (the replicas publish none)
    host_port = compose["services"]["nginx"]["ports"][0].split(":")[1]
    assert env["CDS_PUBLIC_BASE_URL"].rstrip("/").endswith(f":{host_port}")
    # the database credentials match the postgres service
    pg = env_list(compose["services"]["postgres"]["environment"])
    expected = (f"postgresql+psycopg://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/"
                f"{pg['POSTGRES_DB']}")
    assert env["CDS_DATABASE_URL"] == expected


def test_compose_depends_on_healthy_services_that_have_health_checks():
    services = load_compose()["services"]
    deps = services["cds"]["depends_on"]
    assert isinstance(deps, dict), "depends_on needs conditions"
    assert deps["postgres"]["condition"] == "service_healthy"
    assert deps["redis"]["condition"] == "service_healthy"
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            if cond.get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy; it has no healthcheck"
    assert "healthcheck" in services["cds"]
    assert any("/readyz" in str(p) or "/healthz" in str(p) for p in services["cds"]["healthcheck"]["test"])
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]


# ---------------------------------------------------------------- images

def all_images() -> list[tuple[str, str]]:
    images = [(f"compose {n}", s["image"]) for n, s in load_compose()["services"].items() if "image" in s]
    for doc in k8s_docs():
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            images.append((f"{doc['_file']} {c['name']}", c["image"]))
    for word, args in dockerfile_instructions():
        if word == "FROM":
            image = args.split()[0]
            if image.lower() != "scratch":
                images.append(("Dockerfile FROM", image))
    return images


def test_images_are_pinned():
    images = all_images()
    assert len(images) >= 7
    for where, image in images:
        assert pinned(image), f"{where}: image {image!r} is not pinned to a version tag"


def test_expected_images():
    services = load_compose()["services"]
    assert services["hapi"]["image"].startswith("hapiproject/hapi:v")
    assert services["hapi-load"]["image"].startswith("curlimages/curl:")
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")


# ---------------------------------------------------------------- Dockerfile

def test_dockerfile_copy_sources_exist():
    copies = 0
    for word, args in dockerfile_instructions():
        if word not in ("COPY", "ADD"):
            continue
        parts = shlex.split(args)
        if any(p.startswith("--from") for p in parts):
            continue
        parts = [p for p in parts if not p.startswith("--")]
        for source in parts[:-1]:
            copies += 1
            assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
    assert copies, "the Dockerfile copies nothing from the context"


def test_dockerignore_keeps_the_copied_sources():
    ignore = DOCKER / "Dockerfile.dockerignore"
    lines = [ln.strip() for ln in ignore.read_text(encoding="utf-8").splitlines() if ln.strip()
             and not ln.startswith("#")]
    reincluded = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    for word, args in dockerfile_instructions():
        if word == "COPY" and "--from" not in args:
            for source in shlex.split(args)[:-1]:
                assert source.rstrip("/").lstrip("./") in reincluded, f"{source} is excluded from the context"


def test_dockerfile_is_multi_stage_non_root_and_healthchecked():
    inst = dockerfile_instructions()
    froms = [a for w, a in inst if w == "FROM"]
    assert len(froms) >= 2, "multi-stage build expected"
    final = max(i for i, (w, _) in enumerate(inst) if w == "FROM")
    tail = inst[final:]
    assert any(w == "COPY" and "--from=" in a for w, a in tail), "the final stage copies from the build stage"
    assert not any(w == "RUN" and re.search(r"apt-get install|gcc|build-essential", a) for w, a in tail), \
        "no build tools in the final stage"
    users = [a for w, a in tail if w == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0", \
        "the final USER must be a numeric non-root uid (so that runAsNonRoot can verify it)"
    health = [a for w, a in tail if w == "HEALTHCHECK"]
    assert health and "/healthz" in health[-1]
    cmd = [a for w, a in tail if w in ("CMD", "ENTRYPOINT")]
    assert cmd and json.loads(cmd[-1]) == ["cds-service", "serve"]
    env = " ".join(a for w, a in tail if w == "ENV")
    assert "CDS_HOST=0.0.0.0" in env, "gunicorn must listen beyond 127.0.0.1 inside the container"
    uid = int(users[-1].split(":")[0])
    pod = one("Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsUser"] == uid, "the Deployment's runAsUser should be the image's user"


# ---------------------------------------------------------------- settings

def cds_vars_used() -> dict[str, set[str]]:
    used: dict[str, set[str]] = {}
    compose = load_compose()
    for name, svc in compose["services"].items():
        for key in env_list(svc.get("environment")):
            used.setdefault(key, set()).add(f"compose {name}")
    for doc in k8s_docs():
        if doc["kind"] in ("ConfigMap", "Secret"):
            keys = set(doc.get("data") or {}) | set(doc.get("stringData") or {})
            for key in keys:
                used.setdefault(key, set()).add(doc["_file"])
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []):
            for e in c.get("env", []):
                used.setdefault(e["name"], set()).add(doc["_file"])
    # any CDS_ name written anywhere in the files (comments included) must be real too
    for path in [COMPOSE, DOCKERFILE, *(K8S / n for n in K8S_FILES)]:
        for var in CDS_VAR.findall(path.read_text(encoding="utf-8")):
            used.setdefault(var, set()).add(path.name)
    return {k: v for k, v in used.items() if k.startswith("CDS_")}


def test_every_cds_variable_is_a_real_setting():
    used = cds_vars_used()
    assert len(used) >= 10
    unknown = {k: sorted(v) for k, v in used.items() if k not in SETTING_VARS}
    assert not unknown, f"not settings of cds_service.config.Settings: {unknown}"


def test_settings_in_the_files_parse():
    """The values given are valid for their settings (types, ranges)."""
    env = env_list(load_compose()["services"]["cds"]["environment"])
    Settings.from_env(env)
    cm = {k: str(v) for k, v in one("ConfigMap")["data"].items()}
    secret = {k: str(v) for k, v in one("Secret")["stringData"].items() if k.startswith("CDS_")}
    Settings.from_env({**cm, **secret})


# ---------------------------------------------------------------- Kubernetes

def test_probes_point_at_healthz_and_readyz_on_the_service_port():
    c = cds_container()
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["startupProbe"]["httpGet"]["path"] in ("/healthz", "/readyz")
    cds_port = int(one("ConfigMap")["data"]["CDS_PORT"])
    service = one("Service")
    (sport,) = service["spec"]["ports"]
    assert sport["port"] == 80
    target = container_port(c, sport["targetPort"])
    assert target == cds_port, f"Service targetPort {target} != CDS_PORT {cds_port}"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container_port(c, c[probe]["httpGet"]["port"]) == cds_port, f"{probe} port != CDS_PORT"
    assert one("ConfigMap")["data"]["CDS_HOST"] == "0.0.0.0"
    ann = service["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/path"] == "/metrics"
    assert int(ann["prometheus.io/port"]) == cds_port
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_service_pdb_and_hpa_select_the_deployment():
    dep = one("Deployment")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert one("Service")["spec"]["selector"].items() <= labels.items()
    assert one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == ("apps/v1", "Deployment", dep["metadata"]["name"])
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["averageUtilization"] == 70
    assert dep["spec"]["replicas"] == 3
    pdb = one("PodDisruptionBudget")["spec"]
    assert pdb.get("minAvailable", 0) < hpa["spec"]["minReplicas"], "the PDB would block every eviction"


def test_configmap_and_secret_keys_are_all_used_by_the_deployment():
    dep_spec = one("Deployment")["spec"]["template"]["spec"]
    c = cds_container()
    cm, secret = one("ConfigMap"), one("Secret")
    env_from = {("cm", e["configMapRef"]["name"]) if "configMapRef" in e else ("secret", e["secretRef"]["name"])
                for e in c.get("envFrom", [])}
    assert ("cm", cm["metadata"]["name"]) in env_from, "the Deployment does not read the ConfigMap"
    assert ("secret", secret["metadata"]["name"]) in env_from, "the Deployment does not read the Secret"
    # keys that are not settings must be mounted as files from the same object
    mounted: dict[str, str] = {}  # key -> path inside the container
    mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
    for vol in dep_spec.get("volumes", []):
        src = vol.get("secret") or vol.get("configMap")
        if not src or vol["name"] not in mounts:
            continue
        obj = src.get("secretName") or src.get("name")
        for item in src.get("items", []):
            mounted[f"{obj}/{item['key']}"] = f"{mounts[vol['name']]['mountPath'].rstrip('/')}/{item['path']}"
    for obj in (cm, secret):
        keys = set(obj.get("data") or {}) | set(obj.get("stringData") or {})
        assert keys, f"{obj['_file']} has no keys"
        for key in keys:
            if key.startswith("CDS_"):
                assert key in SETTING_VARS, f"{obj['_file']}: {key} is not a setting"
            else:
                assert f"{obj['metadata']['name']}/{key}" in mounted, f"{obj['_file']}: {key} is neither a setting nor mounted"
    issuers = mounted.get(f"{secret['metadata']['name']}/trusted-issuers.json")
    assert issuers, "the trusted issuers file must be mounted from the Secret"
    assert cm["data"]["CDS_TRUSTED_ISSUERS_FILE"] == issuers, "CDS_TRUSTED_ISSUERS_FILE is not the mounted file"
    json.loads(secret["stringData"]["trusted-issuers.json"])  # the example is valid JSON
    assert {"CDS_DATABASE_URL", "CDS_AUDIT_HASH_KEY"} <= set(secret["stringData"])
    assert secret["stringData"]["CDS_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "CDS_REDIS_URL" in cm["data"] or "CDS_REDIS_URL" in secret["stringData"], \
        "several replicas need the shared jti replay cache"
    assert "example" in (K8S / "secret.example.yaml").read_text(encoding="utf-8").splitlines()[0].lower()


def test_deployment_security_context_and_writable_tmp():
    spec = one("Deployment")["spec"]["template"]["spec"]
    c = cds_container()
    assert spec["securityContext"]["runAsNonRoot"] is True
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert tmp, "/tmp must be writable (gunicorn and the Prometheus multiprocess folder)"
    vol = {v["name"]: v for v in spec["volumes"]}[tmp[0]["name"]]
    assert "emptyDir" in vol
    env_names = {e["name"] for e in c.get("env", [])} | set(one("ConfigMap")["data"])
    if "PROMETHEUS_MULTIPROC_DIR" in env_names:  # cds-service lists that folder: it must be writable
        pytest.fail("PROMETHEUS_MULTIPROC_DIR must be an existing folder; leave it unset (serve makes one under /tmp)")


def _quantity(q: str | int) -> float:
    s = str(q)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if s.endswith(suffix):
            return float(s[: -len(suffix)]) * factor
    return float(s)


def test_resources_requests_within_limits():
    res = cds_container()["resources"]
    for kind in ("cpu", "memory"):
        assert _quantity(res["requests"][kind]) <= _quantity(res["limits"][kind]), kind
    # README "Benchmarks": ~85 MiB RSS per worker; the request must hold the workers and the arbiter
    workers = int(one("ConfigMap")["data"]["CDS_WORKERS"])
    assert _quantity(res["requests"]["memory"]) >= (workers + 1) * 100 * 2**20


# ---------------------------------------------------------------- docs

def test_docker_readme_says_what_checks_the_files():
    text = " ".join((DOCKER / "README.md").read_text(encoding="utf-8").split())
    assert "no container engine" in text and "tests/ops/test_deploy_files.py" in text
    for var in cds_vars_used():
        assert var in text, f"docker/README.md does not explain {var}"


# ---------------------------------------------------------------- reverse proxy (docker/nginx/)

NGINX_CONF = DOCKER / "nginx" / "nginx.conf"


def _nginx_directives() -> dict[str, list[str]]:
    """Every simple directive of nginx.conf (comments dropped), by name: its values as written."""
    out: dict[str, list[str]] = {}
    text = "\n".join(line.split("#", 1)[0] for line in NGINX_CONF.read_text(encoding="utf-8").splitlines())
    for stmt in re.findall(r"""(?:[^;{}"']|"[^"]*"|'[^']*')+""", text):  # ; { } outside quotes end one
        words = stmt.split(None, 1)
        if words:
            out.setdefault(words[0], []).append(words[1].strip() if len(words) > 1 else "")
    return out


def _nginx_size(value: str) -> int:
    factor = {"k": 2**10, "m": 2**20, "g": 2**30}.get(value[-1].lower(), 1)
    return int(value.rstrip("kKmMgG")) * factor


def test_nginx_conf_protects_against_slow_clients_and_passes_request_ids():
    d = _nginx_directives()
    for name in ("client_header_timeout", "client_body_timeout", "send_timeout"):
        assert name in d, f"docker/nginx/nginx.conf has no {name}"
        assert int(d[name][0].rstrip("s")) <= 30, f"{name} {d[name][0]} is too long to stop slow clients"
    assert d["proxy_request_buffering"] == ["on"]
    # the same body limit as the service's default CDS_MAX_BODY_BYTES
    assert _nginx_size(d["client_max_body_size"][0]) == Settings().max_body_bytes
    assert "keepalive" in d and int(d["keepalive"][0]) > 0, "no keep-alive connections to the upstream"
    assert 'Connection ""' in d["proxy_set_header"], "upstream keep-alive needs an empty Connection header"
    assert any(v.startswith("X-Request-ID ") for v in d["proxy_set_header"])
    # nginx's own error pages carry the security headers the application adds
    added = {v.split()[0] for v in d["add_header"] if v.endswith("always")}
    assert {"X-Content-Type-Options", "Cache-Control", "Referrer-Policy", "X-Frame-Options",
            "Content-Security-Policy"} <= added


def test_nginx_conf_parses(tmp_path):
    import shutil
    import subprocess

    nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                           if Path(p).exists()), None)
    if not nginx:
        pytest.skip("nginx is not installed: docker/nginx/nginx.conf was not checked with `nginx -t` "
                    "(install Debian's nginx to run this check)")
    from datetime import datetime, timedelta, timezone

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    # a throw-away certificate in place of /etc/nginx/tls/, so that `nginx -t` can load it
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))
    (tmp_path / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    conf = NGINX_CONF.read_text(encoding="utf-8").replace("/etc/nginx/tls/", f"{tmp_path}/")
    conf = conf.replace("pid /tmp/nginx-cds.pid;", f"pid {tmp_path}/nginx.pid;")
    (tmp_path / "nginx.conf").write_text(conf, encoding="utf-8")
    r = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------- several replicas (compose, k8s)

def _compose_nginx_edits() -> list[tuple[str, str | None]]:
    """The sed expressions of compose's nginx command: (regex, replacement), or (regex, None) to delete
    the lines that match."""
    script = load_compose()["services"]["nginx"]["command"][0]
    out: list[tuple[str, str | None]] = []
    for expr in re.findall(r"-e '([^']*)'", script):
        if expr.startswith("s|"):
            pattern, replacement = expr[2:].rstrip("|").split("|")
            out.append((pattern, replacement))
        else:
            match = re.fullmatch(r"/(.*)/d", expr)
            assert match, f"compose nginx: unexpected sed expression {expr!r}"
            out.append((match.group(1), None))
    assert out, "compose's nginx adapts docker/nginx/nginx.conf with sed expressions"
    return out


def compose_nginx_conf() -> str:
    """docker/nginx/nginx.conf as compose's nginx service runs it; each edit must change something."""
    conf = NGINX_CONF.read_text(encoding="utf-8")
    for pattern, replacement in _compose_nginx_edits():
        if replacement is None:
            kept = [line for line in conf.splitlines() if not re.search(pattern, line)]
            assert len(kept) < len(conf.splitlines()), f"/{pattern}/d matches no line of nginx.conf"
            conf = "\n".join(kept) + "\n"
        else:
            assert re.search(pattern, conf), f"compose's nginx edit {pattern!r} no longer matches nginx.conf"
            conf = re.sub(pattern, replacement, conf)
    return conf


def test_compose_runs_two_replicas_behind_nginx_sharing_postgres_and_redis():
    services = load_compose()["services"]
    cds, nginx = services["cds"], services["nginx"]
    assert cds.get("deploy", {}).get("replicas", 1) >= 2, "compose should run several replicas of cds"
    assert not cds.get("ports"), "the replicas are reached through nginx only (and cannot share a host port)"
    # every replica has the same environment: one PostgreSQL database and one Redis for all of them
    env = env_list(cds["environment"])
    assert "@postgres:" in env["CDS_DATABASE_URL"] and env["CDS_REDIS_URL"].startswith("redis://redis:")
    # nginx mounts the shipped configuration read-only and starts once a replica is healthy
    mounts = [v.split(":") for v in nginx.get("volumes", []) if isinstance(v, str)]
    conf_mounts = [m for m in mounts if (COMPOSE.parent / m[0]).resolve() == NGINX_CONF.resolve()]
    assert conf_mounts, "compose's nginx must mount docker/nginx/nginx.conf"
    source, target, *mode = conf_mounts[0]
    assert mode and "ro" in mode[0].split(",")
    assert target in nginx["command"][0], "nginx must be started with the mounted configuration"
    assert nginx["depends_on"]["cds"]["condition"] == "service_healthy"
    assert nginx["image"].startswith("nginx:1.")
    # the adapted configuration: the upstream is the compose service (both replicas), nginx listens on
    # the port it publishes, no TLS left, and the slow-client settings are kept
    conf = "\n".join(line.split("#", 1)[0] for line in compose_nginx_conf().splitlines())  # no comments
    (published,) = nginx["ports"]
    container_port = published.rsplit(":", 1)[1]
    assert re.search(rf"^\s*listen {container_port};", conf, re.M), "nginx does not listen on its published port"
    assert not re.search(r"^\s*ssl_", conf, re.M) and " ssl" not in conf.split("listen", 1)[1].split(";", 1)[0]
    upstream = re.search(r"^\s*upstream\s+\S+\s*\{([^}]*)\}", conf, re.M).group(1)
    servers = re.findall(r"^\s*server\s+(\S+)", upstream, re.M)
    assert servers == [f"cds:{env['CDS_PORT']}"], servers
    assert "max_fails=0" not in upstream, "a dead replica should be marked down, not tried on every call"
    next_upstream = re.findall(r"^\s*proxy_next_upstream\s+([^;]*);", conf, re.M)
    assert next_upstream and "non_idempotent" not in next_upstream[0], "a POST must never be sent twice"
    for name in ("client_header_timeout", "client_body_timeout", "proxy_request_buffering", "client_max_body_size"):
        assert re.search(rf"^\s*{name}\s", conf, re.M), f"{name} lost in compose's nginx configuration"


def test_compose_nginx_conf_parses(tmp_path):
    import shutil
    import subprocess

    nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                           if Path(p).exists()), None)
    if not nginx:
        pytest.skip("nginx is not installed: compose's nginx configuration was not checked with `nginx -t` "
                    "(`make nginx` installs Debian's nginx)")
    # `cds` only resolves inside the compose network
    conf = compose_nginx_conf().replace("server cds:", "server 127.0.0.1:")
    conf = conf.replace("pid /tmp/nginx-cds.pid;", f"pid {tmp_path}/nginx.pid;")
    (tmp_path / "nginx.conf").write_text(conf, encoding="utf-8")
    r = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def test_ingress_routes_the_public_base_url_to_the_service_with_the_proxy_settings():
    ing, svc, cm = one("Ingress"), one("Service"), one("ConfigMap")
    assert ing["apiVersion"] == "networking.k8s.io/v1"
    ann = ing["metadata"]["annotations"]
    (rule,) = ing["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    backend = path["backend"]["service"]
    assert backend["name"] == svc["metadata"]["name"]
    assert backend["port"].get("name") in {p.get("name") for p in svc["spec"]["ports"]} or \
        backend["port"].get("number") in {p["port"] for p in svc["spec"]["ports"]}
    # CDS_PUBLIC_BASE_URL is the host and prefix the Ingress serves; the prefix is stripped, so the
    # service sees /cds-services/... and aud = CDS_PUBLIC_BASE_URL + that path
    base = cm["data"]["CDS_PUBLIC_BASE_URL"]
    assert base.startswith("https://")
    host, _, prefix = base[len("https://"):].partition("/")
    assert rule["host"] == host and host in ing["spec"]["tls"][0]["hosts"]
    prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
    assert ann["nginx.ingress.kubernetes.io/use-regex"] == "true"
    called = re.fullmatch(path["path"], f"{prefix}/cds-services/bone-health-patient-view")
    assert called, "the Ingress does not route the hook's URL"
    rewritten = called.expand(ann["nginx.ingress.kubernetes.io/rewrite-target"].replace("$", "\\"))
    assert rewritten == "/cds-services/bone-health-patient-view"
    assert re.fullmatch(path["path"], f"{prefix}/healthz") is None, "/healthz, /readyz, /metrics stay inside"
    # the settings of docker/nginx/nginx.conf
    assert _nginx_size(ann["nginx.ingress.kubernetes.io/proxy-body-size"]) == Settings().max_body_bytes
    assert ann["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "on"
    assert "non_idempotent" not in ann.get("nginx.ingress.kubernetes.io/proxy-next-upstream", "")
    assert float(ann["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > float(cm["data"]["CDS_HOOK_DEADLINE"])
    # the replicas behind it share state
    assert "CDS_REDIS_URL" in cm["data"] and one("Deployment")["spec"]["replicas"] >= 2
