"""Checks of the deployment files in deploy/ against the settings, web paths and commands of the code.

Neither Docker nor Kubernetes is needed: the test parses the Dockerfile, the
Compose file and the Kubernetes manifests and compares the values they share
with the engine, so that a renamed setting, path or command fails here.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any, Callable, Iterator

import click
import pytest
import yaml

from nurture.config.errors import ConfigError
from nurture.config.settings import Settings, load_settings
from nurture.streams import endpoints

PROJECT = Path(__file__).resolve().parents[2]
DEPLOY = PROJECT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"
DEPLOYMENT_DOC = PROJECT / "docs" / "deployment.md"

# mode-streaming 0.7 (Faust's service library) gives a stopping service up to 60 s.
MIN_GRACE_SECONDS = 60
# A first recovery of the tables from the changelogs can take many minutes.
MIN_STARTUP_SECONDS = 600
SettingsLoader = Callable[[dict[str, str], str], Settings]
WORKER_LABELS = {"app.kubernetes.io/name": "nurture", "app.kubernetes.io/component": "worker"}
API_TOKEN_VARIABLE = "NURTURE_API_TOKEN"
# Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message} and ${VAR?message}.
COMPOSE_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<operator>:?[-?])(?P<argument>[^}]*))?\}")


# --- parsing -----------------------------------------------------------------


def read_dockerfile(path: Path) -> list[tuple[str, str]]:
    """Return (INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(index for index, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def arguments_of(instructions: list[tuple[str, str]], keyword: str) -> list[str]:
    return [arguments for name, arguments in instructions if name == keyword]


def dockerfile_env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    """Return the variables that the ENV instructions set, in the KEY=VALUE form."""
    env: dict[str, str] = {}
    for arguments in arguments_of(instructions, "ENV"):
        for token in shlex.split(arguments):
            key, separator, value = token.partition("=")
            assert separator, f"ENV {arguments!r}: use the KEY=VALUE form"
            env[key] = value
    return env


def nurture_env(env: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in env.items() if key.startswith("NURTURE_")}


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as stream:
        return [document for document in yaml.safe_load_all(stream) if document is not None]


def compose_raw_environment(service: dict[str, Any]) -> dict[str, str]:
    """Return the service's variables as written, before Compose substitutes ${...}."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(entry.partition("=")[::2] for entry in environment)
    return {key: str(value) for key, value in environment.items()}


def substitute_unset(text: str) -> str:
    """Substitute ${...} as Compose does when the shell sets none of the variables.

    A variable that must be set (``:?``, ``?``) becomes a stand-in value, because
    Compose stops before it starts anything when the operator leaves it unset.
    """

    def value(match: re.Match[str]) -> str:
        operator = match.group("operator") or ""
        if operator.endswith("-"):
            return match.group("argument")
        if operator.endswith("?"):
            return f"stand-in-for-{match.group('name')}"
        return ""

    # "$$" is Compose's escape for a literal "$", which must not start a variable.
    return COMPOSE_VARIABLE.sub(value, text.replace("$$", "\0")).replace("\0", "$")


def compose_environment(service: dict[str, Any]) -> dict[str, str]:
    """Return the service's variables as its container gets them with nothing set in the shell."""
    return {key: substitute_unset(value) for key, value in compose_raw_environment(service).items()}


def compose_mounts(service: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the service's volumes in Compose's long syntax."""
    mounts = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            mounts.append(entry)
            continue
        parts = entry.split(":")
        if len(parts) == 1:
            mounts.append({"type": "volume", "target": parts[0]})
        else:
            mounts.append({"type": "volume", "source": parts[0], "target": parts[1],
                           "read_only": parts[2:] == ["ro"]})
    return mounts


def compose_ports(service: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the service's ports in Compose's long syntax."""
    ports = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.append(entry)
            continue
        parts = str(entry).split("/")[0].split(":")
        port: dict[str, Any] = {"target": int(parts[-1])}
        if len(parts) >= 2 and parts[-2]:
            port["published"] = parts[-2]
        ports.append(port)
    return ports


def duration_seconds(text: str) -> float:
    """Convert a Compose duration such as ``2m`` or ``1m30s`` to seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    assert "".join(number + unit for number, unit in parts) == text, f"unsupported duration {text!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


# --- the code's side ---------------------------------------------------------


@pytest.fixture(scope="module")
def settings_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty settings file, so that a nurture.toml in the working directory cannot leak in."""
    path = tmp_path_factory.mktemp("settings") / "nurture.toml"
    path.write_text("", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def settings_of(settings_file: Path) -> SettingsLoader:
    """Return a function that loads settings from variables, failing with the manifest's name."""

    def load(environ: dict[str, str], where: str) -> Settings:
        try:
            return load_settings(settings_file, environ=environ)
        except ConfigError as exc:
            problem = str(exc)
        pytest.fail(f"{where}: {problem}")

    return load


@pytest.fixture(scope="module")
def nurture_cli(settings_file: Path) -> click.Group:
    """The `nurture` command group with the commands that streams/cli.py adds to Faust's."""
    from faust.cli.faust import cli as faust_cli

    from nurture.agents.ingest import RuntimeHolder
    from nurture.streams import cli

    # A group of its own, so that Faust's global group stays untouched.
    # _add_commands is where `main` assembles the commands.
    group = click.Group("nurture", commands={"worker": faust_cli.commands["worker"]})
    cli._add_commands(group, None, load_settings(settings_file, environ={}), RuntimeHolder())  # no worker runs here
    return group


def command_path(group: click.Group, argv: list[str]) -> list[str]:
    """Return the subcommand names of ``argv`` after parsing it as `nurture` would.

    Raises click.UsageError for an unknown command or option and for an invalid value.
    """
    assert argv[:1] == ["nurture"], f"{argv}: the command must start with nurture"
    context = click.Context(group, info_name="nurture")
    command: click.Command = group
    args = argv[1:]
    path: list[str] = []
    while isinstance(command, click.Group) and args and not args[0].startswith("-"):
        name, found, args = command.resolve_command(context, args)
        assert name is not None and found is not None
        path.append(name)
        command = found
        context = click.Context(command, info_name=name, parent=context)
    command.make_context(path[-1] if path else "nurture", list(args), parent=context.parent)
    return path


# --- the files ---------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return read_dockerfile(DOCKERFILE)


@pytest.fixture(scope="module")
def image_env(dockerfile: list[tuple[str, str]]) -> dict[str, str]:
    """NURTURE_* variables that the image sets; the Compose services and pods start from them."""
    return nurture_env(dockerfile_env(final_stage(dockerfile)))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    documents = load_yaml_documents(COMPOSE)
    assert len(documents) == 1
    return documents[0]


@pytest.fixture(scope="module")
def nurture_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Compose services that run the image built from deploy/Dockerfile."""
    services = {}
    for name, service in compose["services"].items():
        build = service.get("build")
        if not isinstance(build, dict):
            continue
        context = (COMPOSE.parent / build["context"]).resolve()
        if (context / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE:
            services[name] = service
    return services


@pytest.fixture(scope="module")
def k8s() -> dict[tuple[str, str], dict[str, Any]]:
    """Every Kubernetes document in deploy/k8s, by kind and name."""
    documents: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for document in load_yaml_documents(path):
            key = (document["kind"], document["metadata"]["name"])
            assert key not in documents, f"{path.name}: {key} is defined twice"
            documents[key] = document
    return documents


def pod_specs(k8s: dict[tuple[str, str], dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for (kind, name), document in k8s.items():
        if kind in ("StatefulSet", "Job", "Deployment", "DaemonSet"):
            yield f"{kind} {name}", document["spec"]["template"]["spec"]


def container_env(container: dict[str, Any], k8s: dict[tuple[str, str], dict[str, Any]]) -> dict[str, str]:
    """Variables a container gets from its ConfigMaps and its own env list, in Kubernetes' order.

    A value from a Secret, which the repository does not contain, becomes a stand-in.
    """
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(k8s[("ConfigMap", source["configMapRef"]["name"])]["data"])
    for variable in container.get("env", []):
        source = variable.get("valueFrom", {})
        if "secretKeyRef" in source:
            reference = source["secretKeyRef"]
            env[variable["name"]] = f"stand-in-for-secret-{reference['name']}-{reference['key']}"
        elif "configMapKeyRef" in source:
            reference = source["configMapKeyRef"]
            env[variable["name"]] = k8s[("ConfigMap", reference["name"])]["data"][reference["key"]]
        else:
            assert not source, f"{variable['name']}: unsupported valueFrom {sorted(source)}"
            env[variable["name"]] = str(variable.get("value", ""))
    return env


def secret_reference(container: dict[str, Any], name: str) -> dict[str, Any] | None:
    """Return the secretKeyRef of the container's variable ``name``, or None when it has another source."""
    for variable in container.get("env", []):
        if variable["name"] == name:
            return variable.get("valueFrom", {}).get("secretKeyRef")
    return None


def container_named(workload: dict[str, Any], name: str) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    matches = [container for container in containers if container["name"] == name]
    assert len(matches) == 1, f"no single container named {name!r}"
    return matches[0]


@pytest.fixture(scope="module")
def statefulset(k8s: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    return k8s[("StatefulSet", "nurture-worker")]


@pytest.fixture(scope="module")
def worker_container(statefulset: dict[str, Any]) -> dict[str, Any]:
    return container_named(statefulset, "worker")


@pytest.fixture(scope="module")
def deliver_statefulset(k8s: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    assert ("StatefulSet", "nurture-deliver") in k8s, "no StatefulSet nurture-deliver in deploy/k8s"
    return k8s[("StatefulSet", "nurture-deliver")]


@pytest.fixture(scope="module")
def deliver_container(deliver_statefulset: dict[str, Any]) -> dict[str, Any]:
    return container_named(deliver_statefulset, "deliver")


@pytest.fixture(scope="module")
def k8s_worker_settings(settings_of: SettingsLoader, image_env: dict[str, str], worker_container: dict[str, Any],
                        k8s: dict[tuple[str, str], dict[str, Any]]) -> Settings:
    return settings_of({**image_env, **container_env(worker_container, k8s)}, "StatefulSet nurture-worker")


def resolve_port(port: int | str, container: dict[str, Any]) -> int:
    """Return the number of a probe's or Service's port, looking up a named port in the container."""
    if isinstance(port, int):
        return port
    named = {entry["name"]: entry["containerPort"] for entry in container.get("ports", []) if "name" in entry}
    assert port in named, f"port name {port!r} is not one of the container's {sorted(named)}"
    return int(named[port])


# --- Dockerfile --------------------------------------------------------------


def test_dockerfile_base_is_python_311_slim(dockerfile: list[tuple[str, str]]) -> None:
    for base in arguments_of(dockerfile, "FROM"):
        assert base.startswith("python:3.11-slim"), base


def test_dockerfile_installs_package_from_repo(dockerfile: list[tuple[str, str]]) -> None:
    installs = [run for run in arguments_of(dockerfile, "RUN") if re.search(r"pip install\b.*\s\.(\s|$)", run)]

    assert installs, "no RUN installs the package with pip install ."


def test_dockerfile_runs_as_non_root(dockerfile: list[tuple[str, str]]) -> None:
    users = arguments_of(final_stage(dockerfile), "USER")

    assert users, "the final stage sets no USER, so it runs as root"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_dockerfile_env_names_are_settings(settings_of: SettingsLoader, image_env: dict[str, str]) -> None:
    settings = settings_of(image_env, "deploy/Dockerfile ENV")

    assert settings.worker.web_host == "0.0.0.0"


def test_dockerfile_volume_is_data_dir(settings_of: SettingsLoader, dockerfile: list[tuple[str, str]],
                                       image_env: dict[str, str]) -> None:
    settings = settings_of(image_env, "deploy/Dockerfile ENV")
    volumes = [path for arguments in arguments_of(final_stage(dockerfile), "VOLUME") for path in json.loads(arguments)]

    assert volumes == [settings.worker.data_dir]


def test_dockerfile_exposes_web_port(settings_of: SettingsLoader, dockerfile: list[tuple[str, str]],
                                     image_env: dict[str, str]) -> None:
    settings = settings_of(image_env, "deploy/Dockerfile ENV")
    exposed = [int(port.split("/")[0]) for arguments in arguments_of(final_stage(dockerfile), "EXPOSE")
               for port in arguments.split()]

    assert exposed == [settings.worker.web_port]


def test_dockerfile_healthcheck_gets_live(dockerfile: list[tuple[str, str]]) -> None:
    healthchecks = arguments_of(final_stage(dockerfile), "HEALTHCHECK")
    assert len(healthchecks) == 1
    _, separator, exec_form = healthchecks[0].partition(" CMD ")
    assert separator, "HEALTHCHECK has no CMD"
    command = json.loads(exec_form)
    code = command[2]
    url_path = re.search(r"http://[^/'\"]+(/[^'\"]*)", code)

    assert command[:2] == ["python", "-c"]
    assert "urllib.request.urlopen" in code
    assert url_path is not None, f"no URL in {code!r}"
    assert url_path.group(1) == endpoints.LIVE
    # The port comes from the variable the worker reads, so that they cannot differ.
    assert "os.environ['NURTURE_WORKER_WEB_PORT']" in code


def test_dockerfile_default_command_is_worker(dockerfile: list[tuple[str, str]], nurture_cli: click.Group) -> None:
    commands = arguments_of(final_stage(dockerfile), "CMD")

    assert len(commands) == 1
    assert command_path(nurture_cli, json.loads(commands[0])) == ["worker"]


# --- Compose -----------------------------------------------------------------


def test_compose_services_build_the_image(nurture_services: dict[str, dict[str, Any]]) -> None:
    assert set(nurture_services) == {"topics", "train", "worker", "deliver"}


def test_compose_environment_names_are_settings(settings_of: SettingsLoader, image_env: dict[str, str],
                                                nurture_services: dict[str, dict[str, Any]]) -> None:
    for name, service in nurture_services.items():
        environment = compose_environment(service)
        settings = settings_of({**image_env, **environment}, f"compose service {name}")
        # Only the delivery worker reads a variable outside NURTURE_*: the SMTP password.
        allowed = {settings.deliver.smtp_password_env} if service["command"][1:2] == ["deliver"] else set()
        other = sorted(key for key in environment if not key.startswith("NURTURE_") and key not in allowed)

        assert other == [], f"service {name} sets variables other than NURTURE_*: {other}"


def test_compose_commands_are_nurture_commands(nurture_services: dict[str, dict[str, Any]],
                                               nurture_cli: click.Group) -> None:
    paths = {name: command_path(nurture_cli, service["command"]) for name, service in nurture_services.items()}

    assert paths["topics"] == ["topics", "create"]
    assert paths["train"] == ["train"]
    assert paths["worker"] == ["worker"]
    assert paths["deliver"] == ["deliver"]
    # --once exits when the commands topic is caught up, and the service would then stop delivering.
    assert "--once" not in nurture_services["deliver"]["command"]


def test_compose_worker_token_from_shell(nurture_services: dict[str, dict[str, Any]]) -> None:
    raw = compose_raw_environment(nurture_services["worker"])

    assert API_TOKEN_VARIABLE in raw, f"the worker does not set {API_TOKEN_VARIABLE}, so the API answers 401"
    match = COMPOSE_VARIABLE.fullmatch(raw[API_TOKEN_VARIABLE])
    assert match is not None, f"{API_TOKEN_VARIABLE} is not taken from the shell: {raw[API_TOKEN_VARIABLE]!r}"
    assert match.group("name") == API_TOKEN_VARIABLE
    # Required: Compose stops with the message when the variable is unset, instead of an empty token.
    assert match.group("operator") == ":?"
    assert match.group("argument"), "the :? form needs a message for the operator"


def test_compose_deliver_state_on_named_volume(settings_of: SettingsLoader, image_env: dict[str, str],
                                               compose: dict[str, Any], dockerfile: list[tuple[str, str]],
                                               nurture_services: dict[str, dict[str, Any]]) -> None:
    deliver = nurture_services["deliver"]
    settings = settings_of({**image_env, **compose_environment(deliver)}, "compose service deliver")
    state_dir = settings.deliver.state_dir
    state_mounts = [mount for mount in compose_mounts(deliver) if mount["target"] == state_dir]
    image_directories = " ".join(run for run in arguments_of(final_stage(dockerfile), "RUN") if "mkdir" in run)

    assert state_dir.startswith("/"), f"[deliver] state_dir {state_dir!r} depends on the working directory"
    assert len(state_mounts) == 1, f"deliver mounts no volume at its state_dir {state_dir}"
    assert state_mounts[0]["type"] == "volume"
    # A named volume outlives `up --force-recreate` and image updates; only `down -v` removes it.
    assert state_mounts[0].get("source") in (compose.get("volumes") or {}), "the state volume is not a named volume"
    assert not state_mounts[0].get("read_only")
    # Docker gives a new named volume the owner of the image's directory, so the image must create it.
    assert state_dir in image_directories.split(), f"deploy/Dockerfile does not create {state_dir}"


def test_compose_deliver_waits_for_topics(nurture_services: dict[str, dict[str, Any]]) -> None:
    depends_on = nurture_services["deliver"]["depends_on"]

    assert depends_on["topics"]["condition"] == "service_completed_successfully"


def test_compose_worker_listens_on_web_port(settings_of: SettingsLoader, image_env: dict[str, str],
                                            nurture_services: dict[str, dict[str, Any]]) -> None:
    worker = nurture_services["worker"]
    settings = settings_of({**image_env, **compose_environment(worker)}, "compose service worker")
    ports = compose_ports(worker)

    assert settings.worker.web_host == "0.0.0.0"
    assert [port["target"] for port in ports] == [settings.worker.web_port]
    # A fixed host port lets only one replica of `--scale worker=N` start.
    assert [port for port in ports if port.get("published")] == []


def test_compose_worker_replicas_get_own_data_volume(settings_of: SettingsLoader, image_env: dict[str, str],
                                                     nurture_services: dict[str, dict[str, Any]]) -> None:
    worker = nurture_services["worker"]
    settings = settings_of({**image_env, **compose_environment(worker)}, "compose service worker")
    data_mounts = [mount for mount in compose_mounts(worker) if mount["target"] == settings.worker.data_dir]

    assert len(data_mounts) == 1, f"no single volume at {settings.worker.data_dir}"
    assert data_mounts[0]["type"] == "volume"
    # Only an anonymous volume (no source) is created once per replica.
    assert "source" not in data_mounts[0], "a named volume or bind mount is shared by all replicas"
    assert "container_name" not in worker, "a fixed container name allows one replica only"


def test_compose_train_writes_the_workers_model(settings_of: SettingsLoader, image_env: dict[str, str],
                                                nurture_services: dict[str, dict[str, Any]]) -> None:
    worker, train = nurture_services["worker"], nurture_services["train"]
    worker_settings = settings_of({**image_env, **compose_environment(worker)}, "compose service worker")
    train_settings = settings_of({**image_env, **compose_environment(train)}, "compose service train")
    model_dir = worker_settings.worker.model_dir
    worker_mounts = [mount for mount in compose_mounts(worker) if mount["target"] == model_dir]
    train_mounts = [mount for mount in compose_mounts(train) if mount["target"] == model_dir]

    assert len(worker_mounts) == 1, f"the worker mounts no volume at {model_dir}"
    assert len(train_mounts) == 1, f"train mounts no volume at {model_dir}"
    assert worker_mounts[0].get("source") == train_mounts[0].get("source")
    assert worker_mounts[0].get("read_only") is True
    assert not train_mounts[0].get("read_only")
    # Without --out, train writes to its model_dir.
    assert "--out" not in train["command"]
    assert train_settings.worker.model_dir == model_dir


def test_compose_worker_waits_for_topics_and_model(nurture_services: dict[str, dict[str, Any]]) -> None:
    depends_on = nurture_services["worker"]["depends_on"]

    assert depends_on["topics"]["condition"] == "service_completed_successfully"
    assert depends_on["train"]["condition"] == "service_completed_successfully"


def test_compose_worker_stops_gracefully(nurture_services: dict[str, dict[str, Any]]) -> None:
    grace = nurture_services["worker"].get("stop_grace_period", "10s")

    assert duration_seconds(grace) >= MIN_GRACE_SECONDS


def test_compose_broker_is_the_kafka_service(settings_of: SettingsLoader, image_env: dict[str, str],
                                             compose: dict[str, Any],
                                             nurture_services: dict[str, dict[str, Any]]) -> None:
    kafka = compose["services"]["kafka"]
    kafka_env = compose_environment(kafka)
    advertised = {listener.split("://", 1)[1] for listener in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    roles = set(kafka_env["KAFKA_PROCESS_ROLES"].split(","))

    assert kafka["image"].startswith("apache/kafka:")
    assert roles == {"broker", "controller"}
    for name, service in nurture_services.items():
        settings = settings_of({**image_env, **compose_environment(service)}, f"compose service {name}")
        assert set(settings.bootstrap_servers.split(",")) <= advertised, name


# --- Kubernetes --------------------------------------------------------------


def test_k8s_manifests_set_no_namespace(k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    assert k8s, "no manifests in deploy/k8s"
    for key, document in k8s.items():
        assert "namespace" not in document["metadata"], key


def test_k8s_configmap_holds_settings(settings_of: SettingsLoader, k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    config_maps = {name: document for (kind, name), document in k8s.items() if kind == "ConfigMap"}

    assert {"nurture-config", "nurture-deliver-config"} <= set(config_maps)
    for name, document in config_maps.items():
        data = document["data"]
        other = sorted(key for key in data if not key.startswith("NURTURE_"))
        not_text = sorted(key for key, value in data.items() if not isinstance(value, str))

        assert other == [], f"ConfigMap {name}: variables other than NURTURE_*: {other}"
        assert not_text == [], f"ConfigMap {name}: values must be strings: {not_text}"
        settings_of(data, f"ConfigMap {name}")


def test_k8s_api_token_from_secret(worker_container: dict[str, Any],
                                   k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    reference = secret_reference(worker_container, API_TOKEN_VARIABLE)

    assert reference is not None, f"the worker does not take {API_TOKEN_VARIABLE} from a Secret"
    assert reference.get("name")
    assert reference.get("key")
    # Without the token every API request gets 401, so a missing Secret must stop the pod instead.
    assert not reference.get("optional")
    for (kind, name), document in k8s.items():
        if kind == "ConfigMap":
            assert API_TOKEN_VARIABLE not in document["data"], f"ConfigMap {name} holds the API token"
    for where, spec in pod_specs(k8s):
        for container in spec["containers"]:
            literal = [variable for variable in container.get("env", []) if variable["name"] == API_TOKEN_VARIABLE
                       and "value" in variable]
            assert literal == [], f"{where}: {API_TOKEN_VARIABLE} written in the manifest"


def test_k8s_secrets_documented(k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    # The repository contains no Secret, so docs/deployment.md must show how to create each one the pods read.
    doc = DEPLOYMENT_DOC.read_text(encoding="utf-8")
    references = [variable["valueFrom"]["secretKeyRef"] for _, spec in pod_specs(k8s)
                  for container in spec["containers"] for variable in container.get("env", [])
                  if "secretKeyRef" in variable.get("valueFrom", {})]

    assert references, "no pod reads a Secret"
    assert not [kind for kind, _ in k8s if kind == "Secret"], "a Secret with its value is in deploy/k8s"
    for reference in references:
        # The command with its continuation lines (ending in a backslash).
        command = re.search(rf"kubectl create secret generic {re.escape(reference['name'])}\b(?:.*\\\n)*.*", doc)
        assert command is not None, f"docs/deployment.md does not show how to create Secret {reference['name']}"
        key = reference["key"]
        assert re.search(rf"--from-(literal|file)={key}=", command.group(0)), command.group(0)


def test_k8s_pods_load_settings(settings_of: SettingsLoader, image_env: dict[str, str],
                                k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    for where, spec in pod_specs(k8s):
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                assert ("ConfigMap", source["configMapRef"]["name"]) in k8s, where
            settings_of({**image_env, **container_env(container, k8s)}, where)


def test_k8s_pods_disable_service_links(k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    # Service links would add NURTURE_<SERVICE>_* variables, which the settings reject.
    for where, spec in pod_specs(k8s):
        assert spec.get("enableServiceLinks") is False, where


def test_k8s_commands_are_nurture_commands(k8s: dict[tuple[str, str], dict[str, Any]],
                                           nurture_cli: click.Group) -> None:
    def path_of(kind: str, name: str) -> list[str]:
        container = k8s[(kind, name)]["spec"]["template"]["spec"]["containers"][0]
        return command_path(nurture_cli, [*container.get("command", []), *container.get("args", [])])

    assert path_of("Job", "nurture-topics") == ["topics", "create"]
    assert path_of("Job", "nurture-train") == ["train"]
    assert path_of("StatefulSet", "nurture-worker") == ["worker"]
    assert path_of("StatefulSet", "nurture-deliver") == ["deliver"]


def test_k8s_deliver_runs_continuously(deliver_container: dict[str, Any]) -> None:
    argv = [*deliver_container.get("command", []), *deliver_container.get("args", [])]

    # --once exits when the commands topic is caught up, and the pod would restart over and over.
    assert "--once" not in argv


def test_k8s_deliver_state_on_claim_template(settings_of: SettingsLoader, image_env: dict[str, str],
                                             deliver_statefulset: dict[str, Any],
                                             deliver_container: dict[str, Any],
                                             k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    settings = settings_of({**image_env, **container_env(deliver_container, k8s)}, "StatefulSet nurture-deliver")
    state_dir = settings.deliver.state_dir
    templates = {template["metadata"]["name"]: template
                 for template in deliver_statefulset["spec"].get("volumeClaimTemplates", [])}
    state_mounts = [mount for mount in deliver_container.get("volumeMounts", []) if mount["mountPath"] == state_dir]

    assert state_dir.startswith("/"), f"[deliver] state_dir {state_dir!r} depends on the working directory"
    assert len(state_mounts) == 1, f"no single volume at the state_dir {state_dir}"
    # One claim per replica, because every delivery worker needs a store of its own.
    assert state_mounts[0]["name"] in templates, "the state_dir is not on a volumeClaimTemplate"
    assert templates[state_mounts[0]["name"]]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert not state_mounts[0].get("readOnly")


def test_k8s_deliver_smtp_password_from_secret(settings_of: SettingsLoader, image_env: dict[str, str],
                                               deliver_container: dict[str, Any],
                                               k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    settings = settings_of({**image_env, **container_env(deliver_container, k8s)}, "StatefulSet nurture-deliver")
    password_env = settings.deliver.smtp_password_env
    reference = secret_reference(deliver_container, password_env)

    assert reference is not None, f"the deliver container does not take {password_env} from a Secret"
    assert reference.get("name")
    assert reference.get("key")
    for (kind, name), document in k8s.items():
        if kind == "ConfigMap":
            assert password_env not in document["data"], f"ConfigMap {name} holds the SMTP password"


def test_k8s_deliver_stops_gracefully(deliver_statefulset: dict[str, Any]) -> None:
    grace = deliver_statefulset["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)

    # The command in hand may take several SMTP operations of up to 30 s each.
    assert grace >= MIN_GRACE_SECONDS


def test_train_commands_agree(nurture_services: dict[str, dict[str, Any]],
                              k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    # The same history and cutoff, so that both setups write the same model and
    # the events after the cutoff stay out of training in both.
    train_container = container_named(k8s[("Job", "nurture-train")], "train")
    k8s_argv = [*train_container.get("command", []), *train_container.get("args", [])]

    assert k8s_argv == nurture_services["train"]["command"]
    assert "--until" in k8s_argv, "train uses the events that the demo replays as new ones"


def test_k8s_jobs_restart_on_failure_only(k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    for (kind, name), document in k8s.items():
        if kind == "Job":
            assert document["spec"]["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never"), name


def test_k8s_worker_listens_on_all_interfaces(k8s_worker_settings: Settings) -> None:
    assert k8s_worker_settings.worker.web_host == "0.0.0.0"


def test_k8s_worker_ports_equal_web_port(k8s_worker_settings: Settings, worker_container: dict[str, Any],
                                         k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    web_port = k8s_worker_settings.worker.web_port
    service_ports = k8s[("Service", "nurture-worker")]["spec"]["ports"]

    assert [entry["containerPort"] for entry in worker_container["ports"]] == [web_port]
    assert [entry["port"] for entry in service_ports] == [web_port]
    assert [resolve_port(entry["targetPort"], worker_container) for entry in service_ports] == [web_port]


def test_k8s_worker_probes_use_endpoints(k8s_worker_settings: Settings, worker_container: dict[str, Any]) -> None:
    web_port = k8s_worker_settings.worker.web_port
    readiness = worker_container["readinessProbe"]["httpGet"]
    liveness = worker_container["livenessProbe"]["httpGet"]
    startup = worker_container["startupProbe"]["httpGet"]

    assert readiness["path"] == endpoints.READY
    assert liveness["path"] == endpoints.LIVE
    assert startup["path"] == endpoints.READY
    assert resolve_port(readiness["port"], worker_container) == web_port
    assert resolve_port(liveness["port"], worker_container) == web_port
    assert resolve_port(startup["port"], worker_container) == web_port


def test_k8s_startup_probe_allows_recovery(worker_container: dict[str, Any]) -> None:
    startup = worker_container["startupProbe"]
    budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)

    assert budget >= MIN_STARTUP_SECONDS


def test_k8s_worker_data_on_claim_template(k8s_worker_settings: Settings, statefulset: dict[str, Any],
                                           worker_container: dict[str, Any]) -> None:
    templates = {template["metadata"]["name"]: template for template in statefulset["spec"]["volumeClaimTemplates"]}
    data_mounts = [mount for mount in worker_container["volumeMounts"]
                   if mount["mountPath"] == k8s_worker_settings.worker.data_dir]

    assert len(data_mounts) == 1, f"no single volume at {k8s_worker_settings.worker.data_dir}"
    assert data_mounts[0]["name"] in templates, "the data directory is not on a volumeClaimTemplate"
    assert templates[data_mounts[0]["name"]]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert not data_mounts[0].get("readOnly")


def test_k8s_train_job_writes_the_workers_model(settings_of: SettingsLoader, image_env: dict[str, str],
                                                k8s_worker_settings: Settings, statefulset: dict[str, Any],
                                                worker_container: dict[str, Any],
                                                k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    model_dir = k8s_worker_settings.worker.model_dir
    train_spec = k8s[("Job", "nurture-train")]["spec"]["template"]["spec"]
    train_container = train_spec["containers"][0]
    train_settings = settings_of({**image_env, **container_env(train_container, k8s)}, "Job nurture-train")
    worker_volumes = {volume["name"]: volume for volume in statefulset["spec"]["template"]["spec"]["volumes"]}
    train_volumes = {volume["name"]: volume for volume in train_spec["volumes"]}
    worker_mounts = [mount for mount in worker_container["volumeMounts"] if mount["mountPath"] == model_dir]
    train_mounts = [mount for mount in train_container["volumeMounts"] if mount["mountPath"] == model_dir]

    assert len(worker_mounts) == 1, f"the workers mount no volume at {model_dir}"
    assert len(train_mounts) == 1, f"the train Job mounts no volume at {model_dir}"
    worker_claim = worker_volumes[worker_mounts[0]["name"]]["persistentVolumeClaim"]["claimName"]
    train_claim = train_volumes[train_mounts[0]["name"]]["persistentVolumeClaim"]["claimName"]
    assert worker_claim == train_claim
    assert ("PersistentVolumeClaim", worker_claim) in k8s
    assert "ReadWriteMany" in k8s[("PersistentVolumeClaim", worker_claim)]["spec"]["accessModes"]
    assert worker_mounts[0].get("readOnly") is True
    assert not train_mounts[0].get("readOnly")
    # Without --out, train writes to its model_dir.
    assert "--out" not in train_container["command"]
    assert train_settings.worker.model_dir == model_dir


def test_k8s_worker_stops_gracefully(statefulset: dict[str, Any]) -> None:
    grace = statefulset["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)

    assert grace >= MIN_GRACE_SECONDS


def test_k8s_worker_has_resources(worker_container: dict[str, Any]) -> None:
    resources = worker_container["resources"]

    assert "cpu" in resources["requests"]
    assert "memory" in resources["requests"]
    assert "memory" in resources["limits"]


def test_k8s_workers_spread_over_nodes(statefulset: dict[str, Any]) -> None:
    anti_affinity = statefulset["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    terms = [entry["podAffinityTerm"] for entry in anti_affinity.get("preferredDuringSchedulingIgnoredDuringExecution", [])]
    terms += anti_affinity.get("requiredDuringSchedulingIgnoredDuringExecution", [])

    assert any(term["topologyKey"] == "kubernetes.io/hostname" for term in terms)
    assert all(term["labelSelector"]["matchLabels"] == WORKER_LABELS for term in terms)


def test_k8s_labels_select_the_workers(statefulset: dict[str, Any],
                                       k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    budget = k8s[("PodDisruptionBudget", "nurture-worker")]["spec"]
    service = k8s[("Service", "nurture-worker")]["spec"]

    assert pod_labels == WORKER_LABELS
    assert statefulset["spec"]["selector"]["matchLabels"] == WORKER_LABELS
    assert budget["selector"]["matchLabels"] == WORKER_LABELS
    assert "maxUnavailable" in budget or "minAvailable" in budget
    assert service["selector"] == WORKER_LABELS
    for (kind, name), document in k8s.items():
        if kind in ("Job", "StatefulSet", "Deployment") and name != "nurture-worker":
            assert document["spec"]["template"]["metadata"]["labels"] != WORKER_LABELS, name


def test_k8s_service_is_headless_for_statefulset(statefulset: dict[str, Any],
                                                 k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    service = k8s[("Service", statefulset["spec"]["serviceName"])]

    assert service["spec"]["clusterIP"] == "None"


def test_k8s_prometheus_scrapes_metrics(k8s_worker_settings: Settings, statefulset: dict[str, Any]) -> None:
    annotations = statefulset["spec"]["template"]["metadata"]["annotations"]

    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == endpoints.METRICS
    assert annotations["prometheus.io/port"] == str(k8s_worker_settings.worker.web_port)


def test_k8s_replicas_within_partitions(k8s_worker_settings: Settings, statefulset: dict[str, Any]) -> None:
    # A worker beyond the partition count gets no partition of the input topics.
    assert 1 <= statefulset["spec"]["replicas"] <= k8s_worker_settings.kafka.partitions
