"""Vector indexes: an abstract ``Index`` and a faiss-backed one built from factory strings.

Notation: ``n`` queries or vectors, ``d`` embedding width, ``k`` results per query.

Contract shared by every index (and by the sharded service): ``search`` returns
``(scores float32[n, k], ids int64[n, k])`` with *higher score = closer* (L2 distances are
negated), rows sorted best first, and id ``-1`` / score ``-inf`` where fewer than ``k`` vectors
exist.  Ids are the caller's (global chunk ids), so shards of one database merge by score.

``IndexFactory.create`` accepts raw faiss factory strings (``"Flat"``, ``"IVF256,Flat"``,
``"IVF256,PQ16"``, ``"HNSW32"``, ``"OPQ16,IVF256,PQ16"``, ...) or the aliases ``flat``,
``ivf-flat``, ``ivf-pq``, ``hnsw``, ``opq-ivf-pq``.  With CUDA and faiss-gpu present the index
is moved to the GPU for search (types faiss-gpu cannot hold, e.g. HNSW, stay on the CPU).
"""
from __future__ import annotations

import abc
import json
import logging
import os
import re
from pathlib import Path
from typing import Optional

import numpy as np

from megatron_retro.errors import UserError
from megatron_retro.io_atomic import atomic_file, write_text_atomic

log = logging.getLogger(__name__)

try:  # megatron-style guard: the package imports without faiss, the index code says why not
    import faiss
    HAVE_FAISS = True
except ImportError:  # pragma: no cover - faiss is a declared dependency
    faiss = None
    HAVE_FAISS = False


def check_queries(q, dim: int, what: str = "queries") -> np.ndarray:
    """float32[n, dim] C-contiguous copy of ``q``, or a UserError naming what is wrong."""
    q = np.asarray(q)
    if q.ndim != 2 or q.shape[1] != dim:
        raise UserError(f"{what}: shape {tuple(q.shape)}, expected [n, {dim}]")
    q = np.ascontiguousarray(q, dtype=np.float32)
    if not np.isfinite(q).all():
        raise UserError(f"{what}: contains NaN or infinite values")
    return q


class Index(abc.ABC):
    """train / add / search / save / load over float32 vectors with int64 ids."""

    dim: int
    metric: str  # "ip" or "l2"

    @abc.abstractmethod
    def train(self, x: np.ndarray) -> None:
        """Fit quantizers on float32[n, d] (no-op for indexes that need no training)."""

    @abc.abstractmethod
    def add(self, x: np.ndarray, ids: np.ndarray) -> None:
        """Add float32[n, d] vectors under int64[n] ids."""

    @abc.abstractmethod
    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores float32[n, k], ids int64[n, k]), higher score = closer, best first."""

    @abc.abstractmethod
    def save(self, path: str | os.PathLike) -> None:
        """Write the index to ``path`` (atomically)."""

    @classmethod
    @abc.abstractmethod
    def load(cls, path: str | os.PathLike, **kwargs) -> "Index":
        """Read an index written by ``save``."""

    @property
    @abc.abstractmethod
    def ntotal(self) -> int:
        """Number of vectors added."""

    @property
    def is_trained(self) -> bool:
        return True


_METRICS = {"ip": "METRIC_INNER_PRODUCT", "l2": "METRIC_L2"}


def _gpu_count() -> int:
    if not HAVE_FAISS or not hasattr(faiss, "StandardGpuResources"):
        return 0
    try:
        return int(faiss.get_num_gpus())
    except Exception:  # faiss-gpu imported on a machine without a driver
        return 0


class FaissIndex(Index):
    """A faiss index wrapped in IDMap (so every type takes caller ids) plus search parameters."""

    def __init__(self, index, factory: str, metric: str, params: Optional[dict] = None,
                 use_gpu: str | bool = "auto"):
        self.cpu_index = index
        self.factory = factory
        self.metric = metric
        self.dim = int(index.d)
        self.params = dict(params or {})
        self._gpu_resources = None
        self.index = self._to_device(index, use_gpu)
        self._apply_params()

    # -- construction ---------------------------------------------------------------------
    def _to_device(self, index, use_gpu):
        want = (_gpu_count() > 0) if use_gpu == "auto" else bool(use_gpu)
        if not want:
            return index
        if _gpu_count() == 0:
            raise UserError("use_gpu=True but faiss sees no GPU (is faiss-gpu installed and CUDA present?)")
        try:
            self._gpu_resources = faiss.StandardGpuResources()
            return faiss.index_cpu_to_gpu(self._gpu_resources, 0, index)
        except RuntimeError as e:  # e.g. HNSW has no GPU implementation
            log.warning("index %s stays on the CPU: %s", self.factory, str(e).splitlines()[0])
            self._gpu_resources = None
            return index

    def _apply_params(self) -> None:
        on_gpu = self.index is not self.cpu_index
        space = faiss.GpuParameterSpace() if on_gpu else faiss.ParameterSpace()
        for name, value in self.params.items():
            if value is None:
                continue
            try:
                space.set_index_parameter(self.index, name, value)
            except RuntimeError as e:
                raise UserError(f"index {self.factory!r}: cannot set {name}={value}: "
                                f"{str(e).splitlines()[0]}") from None

    def _sync_cpu(self) -> None:
        if self.index is not self.cpu_index:
            self.cpu_index = faiss.index_gpu_to_cpu(self.index)

    # -- Index API ------------------------------------------------------------------------
    @property
    def is_trained(self) -> bool:
        return bool(self.index.is_trained)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def train(self, x: np.ndarray) -> None:
        if self.index.is_trained:
            return
        x = check_queries(x, self.dim, "training vectors")
        self.index.train(x)
        self._apply_params()

    def add(self, x: np.ndarray, ids: np.ndarray) -> None:
        x = check_queries(x, self.dim, "vectors")
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if ids.shape != (x.shape[0],):
            raise UserError(f"ids: shape {ids.shape}, expected [{x.shape[0]}]")
        if not self.index.is_trained:
            raise UserError(f"index {self.factory!r} must be trained before add")
        self.index.add_with_ids(x, ids)

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = check_queries(q, self.dim)
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise UserError(f"k={k}: must be an integer >= 1")
        if q.shape[0] == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        dist, ids = self.index.search(q, int(k))
        scores = dist if self.metric == "ip" else -dist
        scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
        return scores, ids.astype(np.int64)

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._sync_cpu()
        atomic_file(path, lambda tmp: faiss.write_index(self.cpu_index, tmp))
        meta = {"factory": self.factory, "metric": self.metric, "dim": self.dim, "params": self.params}
        write_text_atomic(Path(str(path) + ".json"), json.dumps(meta, indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike, use_gpu: str | bool = "auto", **params) -> "FaissIndex":
        path = Path(path)
        meta_file = Path(str(path) + ".json")
        if not path.is_file() or not meta_file.is_file():
            raise UserError(f"{path}: no saved index here (need {path.name} and {meta_file.name})")
        meta = json.loads(meta_file.read_text())
        index = faiss.read_index(str(path))
        merged = dict(meta.get("params", {}))
        merged.update({k: v for k, v in params.items() if v is not None})
        return cls(index, meta["factory"], meta["metric"], merged, use_gpu=use_gpu)


class IndexFactory:
    """Builds ``Index`` objects from faiss factory strings or short aliases."""

    @staticmethod
    def resolve(spec: str, nlist: int = 256, pq_m: int = 16, hnsw_m: int = 32) -> str:
        """Expand an alias (``ivf-pq`` ...) into a faiss factory string; pass others through."""
        aliases = {
            "flat": "Flat",
            "ivf-flat": f"IVF{nlist},Flat",
            "ivf-pq": f"IVF{nlist},PQ{pq_m}",
            "hnsw": f"HNSW{hnsw_m}",
            "opq-ivf-pq": f"OPQ{pq_m},IVF{nlist},PQ{pq_m}",
        }
        return aliases.get(spec.lower(), spec)

    @staticmethod
    def create(spec: str, dim: int, metric: str = "ip", *, nlist: int = 256, pq_m: int = 16,
               hnsw_m: int = 32, nprobe: Optional[int] = None, ef_search: Optional[int] = None,
               use_gpu: str | bool = "auto") -> FaissIndex:
        if not HAVE_FAISS:
            raise UserError("faiss is not installed (pip install faiss-cpu, or faiss-gpu on CUDA)")
        if metric not in _METRICS:
            raise UserError(f"metric={metric!r}: must be one of {sorted(_METRICS)}")
        factory = IndexFactory.resolve(spec, nlist, pq_m, hnsw_m)
        inner = factory[len("IDMap,"):] if factory.startswith("IDMap,") else factory
        for m in re.findall(r"(?:^|,)(?:OPQ|PQ)(\d+)", inner):
            if int(m) and dim % int(m):  # PQ codes split d into m sub-vectors
                raise UserError(f"index {factory!r}: PQ{m} needs dim divisible by {m} (dim={dim})")
        try:
            index = faiss.index_factory(int(dim), f"IDMap,{inner}", getattr(faiss, _METRICS[metric]))
        except RuntimeError as e:
            raise UserError(f"index factory string {factory!r}: {str(e).splitlines()[0]}") from None
        params = {}
        if "IVF" in inner:
            params["nprobe"] = nprobe or 16
        if "HNSW" in inner:
            params["efSearch"] = ef_search or 64
        return FaissIndex(index, inner, metric, params, use_gpu=use_gpu)
