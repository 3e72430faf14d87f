"""The cluster configs in cluster/: what a user would otherwise find out only at launch.

Everything is read as data: no Ray instance, cloud machine or Kubernetes object is started. The
launcher config is checked against the schema that ships inside the installed Ray package.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "cluster"
SHARED_MOUNT = "/mnt/shared"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
EXPOSED_SERVICE_TYPES = {"LoadBalancer", "NodePort"}

# Field names of KubeRay's ray.io/v1 RayCluster that this project may use; a typo in the
# manifest would be dropped silently by the API server instead of failing.
KUBERAY_SPEC_FIELDS = {
    "headGroupSpec",
    "workerGroupSpecs",
    "rayVersion",
    "enableInTreeAutoscaling",
    "autoscalerOptions",
    "headServiceAnnotations",
    "suspend",
}
KUBERAY_HEAD_FIELDS = {
    "serviceType",
    "headService",
    "enableIngress",
    "rayStartParams",
    "template",
}
KUBERAY_WORKER_FIELDS = {
    "groupName",
    "replicas",
    "minReplicas",
    "maxReplicas",
    "numOfHosts",
    "rayStartParams",
    "template",
    "scaleStrategy",
}
KUBERAY_AUTOSCALER_FIELDS = {
    "resources",
    "image",
    "imagePullPolicy",
    "env",
    "envFrom",
    "volumeMounts",
    "securityContext",
    "idleTimeoutSeconds",
    "upscalingMode",
}


# Loading.


def _load_yaml_documents(name: str) -> list[dict[str, Any]]:
    with open(CLUSTER / name) as file:
        return [doc for doc in yaml.safe_load_all(file) if doc is not None]


def _one_of_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [doc for doc in documents if doc.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def launcher() -> dict[str, Any]:
    (config,) = _load_yaml_documents("ray-cluster.yaml")
    return config


@pytest.fixture(scope="module")
def kuberay_documents() -> list[dict[str, Any]]:
    return _load_yaml_documents("kuberay-raycluster.yaml")


@pytest.fixture(scope="module")
def raycluster(kuberay_documents: list[dict[str, Any]]) -> dict[str, Any]:
    return _one_of_kind(kuberay_documents, "RayCluster")


@pytest.fixture(scope="module")
def shared_claim() -> dict[str, Any]:
    return _one_of_kind(
        _load_yaml_documents("kuberay-shared-storage.yaml"), "PersistentVolumeClaim"
    )


def _ray_schema() -> dict[str, Any]:
    # find_spec locates the package without importing Ray.
    spec = importlib.util.find_spec("ray")
    assert spec is not None and spec.submodule_search_locations
    path = Path(next(iter(spec.submodule_search_locations)), "autoscaler", "ray-schema.json")
    return json.loads(path.read_text())


def _makefile_torch_spec() -> str:
    match = re.search(r"^TORCH_SPEC\s*\?=\s*(\S+)\s*$", (REPO / "Makefile").read_text(), re.M)
    assert match, "Makefile defines no TORCH_SPEC default"
    return match.group(1)


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) pairs of cluster/Dockerfile, continuations joined, ARGs applied."""
    text = (CLUSTER / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    defaults: dict[str, str] = {}
    instructions = []
    for line in joined.splitlines():
        if not line.strip():
            continue
        keyword, _, rest = line.strip().partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            defaults[name.strip()] = value.strip().strip('"')
        for name, value in defaults.items():
            rest = rest.replace("${" + name + "}", value).replace("$" + name, value)
        instructions.append((keyword, rest.strip()))
    return instructions


def _dockerfile_base_image() -> str:
    images = [rest.split()[0] for keyword, rest in _dockerfile_instructions() if keyword == "FROM"]
    assert len(images) == 1, f"expected one FROM, found {images}"
    return images[0]


# Reading shell commands.


def _shell_segments(command: str) -> list[list[str]]:
    """The simple commands of a shell line, split on ; && || and parentheses, as tokens."""
    pieces = re.split(r";|&&|\|\||[()]", command)
    return [shlex.split(piece) for piece in pieces if piece.strip()]


def _flag(tokens: list[str], name: str) -> str | None:
    for i, token in enumerate(tokens):
        if token.startswith(f"{name}="):
            return token.split("=", 1)[1]
        if token == name and i + 1 < len(tokens):
            return tokens[i + 1]
    return None


def _pip_install_targets(commands: list[str]) -> list[list[str]]:
    """For each `pip install`, in order: what it installs (editable paths as `-e PATH`)."""
    installs = []
    for command in commands:
        for tokens in _shell_segments(command):
            if tokens[:2] != ["pip", "install"]:
                continue
            targets, args = [], tokens[2:]
            for i, token in enumerate(args):
                if token == "-e" and i + 1 < len(args):
                    targets.append(f"-e {args[i + 1]}")
                elif not token.startswith("-") and (i == 0 or args[i - 1] != "-e"):
                    targets.append(token)
            installs.append(targets)
    return installs


def _is_torch(requirement: str) -> bool:
    return re.fullmatch(r"torch(\s*[=<>!~].*)?", requirement) is not None


def _ray_version_of_image(image: str) -> str:
    match = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)(-[\w.-]+)?", image)
    assert match, f"{image!r} is not an official rayproject/ray image with a version tag"
    return match.group(1)


# The Ray cluster launcher config.


def test_launcher_config_satisfies_rays_schema(launcher):
    jsonschema.validate(launcher, _ray_schema())


def test_launcher_head_is_a_declared_node_type_that_offers_no_cpu_or_gpu(launcher):
    head_type = launcher["head_node_type"]
    assert head_type in launcher["available_node_types"]
    resources = launcher["available_node_types"][head_type]["resources"]
    # No trial can be placed on a node that advertises neither CPUs nor GPUs.
    assert resources.get("CPU") == 0
    assert resources.get("GPU", 0) == 0


def test_launcher_dashboard_listens_on_loopback_only(launcher):
    starts = [
        tokens
        for command in launcher["head_start_ray_commands"]
        for tokens in _shell_segments(command)
        if tokens[:2] == ["ray", "start"]
    ]
    assert len(starts) == 1 and "--head" in starts[0]
    assert _flag(starts[0], "--dashboard-host") in LOOPBACK
    assert not any("0.0.0.0" in command for command in launcher["head_start_ray_commands"])


def test_launcher_gpu_workers_autoscale_within_sane_limits(launcher):
    head_type = launcher["head_node_type"]
    workers = {k: v for k, v in launcher["available_node_types"].items() if k != head_type}
    assert any(node["resources"].get("GPU", 0) >= 1 for node in workers.values())
    for name, node in workers.items():
        low, high = node.get("min_workers", 0), node["max_workers"]
        assert 0 <= low <= high, f"{name}: min_workers {low}, max_workers {high}"
        assert 1 <= high <= launcher["max_workers"], f"{name}: max_workers {high}"


def test_launcher_copies_the_repository_it_installs(launcher):
    mounts = {
        remote: local
        for remote, local in launcher["file_mounts"].items()
        if (REPO / local).resolve() == REPO
    }
    assert len(mounts) == 1, "file_mounts must copy the repository root exactly once"
    (remote,) = mounts
    installs = _pip_install_targets(launcher["setup_commands"])
    assert [f"-e {remote}"] in installs


@pytest.mark.parametrize("excluded", [".venv", ".git"])
def test_launcher_leaves_local_state_out_of_the_copy(launcher, excluded):
    assert excluded in launcher["rsync_exclude"]


def test_launcher_mounts_the_shared_storage_into_the_container(launcher):
    mounted_on_host = any(
        tokens[:2] == ["sudo", "mount"] and tokens[-1] == SHARED_MOUNT
        for command in launcher["initialization_commands"]
        for tokens in _shell_segments(command)
    )
    assert mounted_on_host, f"no initialization command mounts {SHARED_MOUNT}"
    run_options = " ".join(launcher["docker"]["run_options"])
    assert f"{SHARED_MOUNT}:{SHARED_MOUNT}" in run_options


# Installing: the same torch first, then the project, on both routes.


def _launcher_installs() -> list[list[str]]:
    (config,) = _load_yaml_documents("ray-cluster.yaml")
    return _pip_install_targets(config["setup_commands"])


def _dockerfile_installs() -> list[list[str]]:
    runs = [rest for keyword, rest in _dockerfile_instructions() if keyword == "RUN"]
    return _pip_install_targets(runs)


@pytest.mark.parametrize(
    ("installs", "project"),
    [(_launcher_installs, "-e ~/circletune"), (_dockerfile_installs, "-e .")],
    ids=["launcher", "dockerfile"],
)
def test_torch_is_installed_before_circletune(installs, project):
    steps = installs()
    torch_steps = [i for i, targets in enumerate(steps) if any(map(_is_torch, targets))]
    project_steps = [i for i, targets in enumerate(steps) if project in targets]
    assert torch_steps and project_steps, steps
    assert max(torch_steps) < min(project_steps)
    # The same pin as a local `make`, so every node runs the torch the project was tested with.
    torch_requirements = {t for i in torch_steps for t in steps[i] if _is_torch(t)}
    assert torch_requirements == {_makefile_torch_spec()}


# The KubeRay manifest.


def test_kuberay_manifest_is_an_autoscaling_v1_raycluster(raycluster):
    assert raycluster["apiVersion"] == "ray.io/v1"
    assert raycluster["spec"]["enableInTreeAutoscaling"] is True


def test_kuberay_manifest_uses_only_known_fields(raycluster):
    spec = raycluster["spec"]
    assert set(spec) <= KUBERAY_SPEC_FIELDS, set(spec) - KUBERAY_SPEC_FIELDS
    assert set(spec["headGroupSpec"]) <= KUBERAY_HEAD_FIELDS
    assert set(spec.get("autoscalerOptions", {})) <= KUBERAY_AUTOSCALER_FIELDS
    for group in spec["workerGroupSpecs"]:
        assert set(group) <= KUBERAY_WORKER_FIELDS, set(group) - KUBERAY_WORKER_FIELDS


def test_kuberay_head_is_not_exposed_outside_the_cluster(raycluster):
    head = raycluster["spec"]["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") not in EXPOSED_SERVICE_TYPES
    assert head.get("headService", {}).get("spec", {}).get("type") not in EXPOSED_SERVICE_TYPES
    assert head.get("enableIngress") is not True


def test_kuberay_dashboard_listens_on_loopback_only(raycluster):
    # KubeRay binds the dashboard to 0.0.0.0 when dashboard-host is not given.
    params = raycluster["spec"]["headGroupSpec"]["rayStartParams"]
    assert params.get("dashboard-host") in LOOPBACK


def test_kuberay_head_offers_no_cpu_or_gpu_to_trials(raycluster):
    head = raycluster["spec"]["headGroupSpec"]
    assert head["rayStartParams"].get("num-cpus") == "0"
    assert head["rayStartParams"].get("num-gpus", "0") == "0"
    for container in head["template"]["spec"]["containers"]:
        for section in ("requests", "limits"):
            assert "nvidia.com/gpu" not in container.get("resources", {}).get(section, {})


def _gpu_limit(group: dict[str, Any]) -> int:
    limits = group["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {})
    return int(limits.get("nvidia.com/gpu", 0))


def test_kuberay_gpu_group_requests_gpus_and_scales_sanely(raycluster):
    groups = raycluster["spec"]["workerGroupSpecs"]
    gpu_groups = [group for group in groups if _gpu_limit(group) >= 1]
    assert gpu_groups, "no worker group asks for nvidia.com/gpu"
    for group in groups:
        low, replicas, high = group["minReplicas"], group.get("replicas", 0), group["maxReplicas"]
        assert 0 <= low <= replicas <= high, (group["groupName"], low, replicas, high)
        assert high >= 1, group["groupName"]


def _pod_templates(raycluster: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = raycluster["spec"]
    templates = {"head": spec["headGroupSpec"]["template"]["spec"]}
    for group in spec["workerGroupSpecs"]:
        templates[group["groupName"]] = group["template"]["spec"]
    return templates


def test_kuberay_every_container_mounts_the_shared_volume_at_one_path(raycluster, shared_claim):
    claim = shared_claim["metadata"]["name"]
    for name, pod in _pod_templates(raycluster).items():
        volumes = [
            volume["name"]
            for volume in pod.get("volumes", [])
            if volume.get("persistentVolumeClaim", {}).get("claimName") == claim
        ]
        assert len(volumes) == 1, f"{name}: no volume from the claim {claim!r}"
        for container in pod["containers"]:
            paths = [
                mount["mountPath"]
                for mount in container.get("volumeMounts", [])
                if mount["name"] == volumes[0]
            ]
            assert paths == [SHARED_MOUNT], f"{name}/{container['name']}: {paths}"


def test_kuberay_shared_volume_is_read_write_many(shared_claim):
    assert shared_claim["apiVersion"] == "v1"
    assert "ReadWriteMany" in shared_claim["spec"]["accessModes"]


def test_kuberay_every_group_runs_one_image(raycluster):
    images = {
        container["image"]
        for pod in _pod_templates(raycluster).values()
        for container in pod["containers"]
    }
    assert len(images) == 1, images


def test_kuberay_network_policy_admits_only_this_ray_cluster(kuberay_documents, raycluster):
    policy = _one_of_kind(kuberay_documents, "NetworkPolicy")
    own_pods = {"matchLabels": {"ray.io/cluster": raycluster["metadata"]["name"]}}
    assert policy["spec"]["podSelector"] == own_pods
    assert "Ingress" in policy["spec"]["policyTypes"]
    sources = [source for rule in policy["spec"]["ingress"] for source in rule["from"]]
    assert sources == [{"podSelector": own_pods}]


# One Ray version everywhere.


def test_ray_version_is_the_same_locally_and_on_both_routes(launcher, raycluster):
    installed = importlib.metadata.version("ray")
    assert _dockerfile_base_image() == launcher["docker"]["image"]
    assert _ray_version_of_image(launcher["docker"]["image"]) == installed
    assert raycluster["spec"]["rayVersion"] == installed
