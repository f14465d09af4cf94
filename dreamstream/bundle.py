"""The ONNX bundle: its contract as data, verified loading, and onnxruntime sessions.

A bundle is ``<model_dir>/<version>/`` holding ``manifest.json``, the three
ONNX files of :data:`CONTRACT`, ``items.npy`` and ``item_ids.json``, and
(bundles exported since the live refinement) ``mean_user.npy``: ``m_user``,
the unit mean of the served user vectors over the training log, float32
[D], the direction a new video is pushed down along until watchers earn it
back (:func:`dreamstream.dreamumm_ref.refined_vector`). It is optional, so
older bundles keep loading (:attr:`Bundle.mean_user` is then zeros: no
push-down); when the manifest lists it, its checksum and shape are verified
like the other files'.
``export/`` writes bundles against this contract; the stream worker loads
them through :func:`load_bundle`, which refuses a bundle whose files do not
match their sha256 in the manifest or whose ONNX signatures differ from the
contract. torch-free (onnx is not needed either: signatures are read from
the onnxruntime sessions).

Shapes use symbols: ``B`` (dynamic batch), ``D`` (item space), ``K``
(interests), ``H`` (GRU width), ``Dt``/``Dv`` (item tower input widths).
"""
from __future__ import annotations

import functools

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from dreamstream.checksums import inside, sha256_file

OPSET = 17
TOLERANCE = 1e-4  # max abs difference ONNX vs PyTorch accepted at export
MANIFEST = "manifest.json"
ITEMS = "items.npy"
ITEM_IDS = "item_ids.json"
MEAN_USER = "mean_user.npy"  # optional: m_user [D]
UNIT_TOLERANCE = 1e-3  # |norm - 1| accepted for m_user, as the contract checker accepts items.npy rows
VERSION_RE = re.compile(r"^v\d{8}-\d{6}(-\d+)?$")


@dataclass(frozen=True)
class Port:
    """One input or output of an ONNX function."""

    name: str
    shape: tuple[str, ...]   # symbols, "B" first
    dtype: str = "float32"


@dataclass(frozen=True)
class Function:
    """One ONNX file of the bundle."""

    file: str
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    opset: int = OPSET
    tolerance: float = TOLERANCE


def _p(name: str, *shape: str, dtype: str = "float32") -> Port:
    return Port(name, ("B",) + shape, dtype)


CONTRACT: dict[str, Function] = {
    "dreamumm_step": Function(
        "dreamumm_step.onnx",
        inputs=(_p("state", "D"), _p("item", "D"), _p("weight", "1"), _p("decay", "1")),
        outputs=(_p("state_out", "D"), _p("user", "D")),
    ),
    "opal_step": Function(
        "opal_step.onnx",
        inputs=(_p("item", "D"), _p("hidden", "K", "H"), _p("global", "H"), _p("soft", "K", "D"), _p("decay", "1")),
        outputs=(_p("hidden_out", "K", "H"), _p("global_out", "H"), _p("soft_out", "K", "D"),
                 _p("interests", "K", "D"), _p("weights", "K"), _p("assign", dtype="int64"), _p("probs", "K")),
    ),
    "item_tower": Function(
        "item_tower.onnx",
        inputs=(_p("text", "Dt"), _p("visual", "Dv")),
        outputs=(_p("item", "D"),),
    ),
}

_ORT_TYPES = {"tensor(float)": "float32", "tensor(int64)": "int64"}


class BundleError(RuntimeError):
    """A bundle that must not be served: the message names the file and what to do."""


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` says, plus where it was read from."""

    path: Path
    version: str
    dim: int
    interests: int
    hidden: int
    tau: float
    opset: int
    text_dim: int
    visual_dim: int
    files: Mapping[str, Mapping[str, Any]]
    raw: Mapping[str, Any] = field(repr=False)

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def item_space(self) -> str:
        """The identity of the bundle's item space: the checksums of its item vectors and their ids.

        Two bundles with the same item space (a re-export, a re-quantised
        step function, a new OPAL head) can replace each other under live
        user states; any other pair cannot (``dreamstream rollout``).
        """
        return ":".join(str(self.files.get(name, {}).get("sha256", ""))[:16] for name in (ITEMS, ITEM_IDS))

    def sizes(self) -> dict[str, int]:
        """The values of the contract's shape symbols (``B`` excluded)."""
        return {"D": self.dim, "K": self.interests, "H": self.hidden, "Dt": self.text_dim, "Dv": self.visual_dim, "1": 1}


sha256 = sha256_file  # the name export and the contract checks use


def read_manifest(folder: str | Path) -> Manifest:
    """Parse ``folder/manifest.json`` (no checksum checks: see :func:`verify_bundle`).

    The bundle manifest's one parser: not UTF-8, not JSON, a folder in its
    place, a missing or wrong-typed field, ``files`` that is not a map of
    ``{"sha256": str}`` maps: each is a :class:`BundleError` naming the file.
    """
    from dreamstream.index.shared_file import field_of, read_json, want

    path = Path(folder) / MANIFEST
    raw = read_json(path, BundleError)
    if raw is None:
        raise BundleError(f"{path} does not exist: point at a bundle folder written by `dreamstream export`")
    where = f"{path} (re-export with `dreamstream export`):"
    want(raw, dict, where, BundleError)

    def number(name: str, kind: type | tuple[type, ...] = int) -> Any:
        value = field_of(raw, name, kind, where, error=BundleError)
        if kind is int and value < (1 if name in ("dim", "interests") else 0):
            raise BundleError(f"{where} '{name}' is out of range: {value}")
        return value

    files = field_of(raw, "files", dict, where, error=BundleError)
    for name, entry in files.items():
        want(entry, dict, f"{where} files[{name!r:.60}]", BundleError)
        field_of(entry, "sha256", str, f"{where} files[{name!r:.60}]", error=BundleError)
    return Manifest(path=path, version=str(field_of(raw, "version", (str, int), where, error=BundleError)),
                    dim=number("dim"), interests=number("interests"), hidden=number("hidden"),
                    tau=float(number("tau", (int, float))), opset=number("opset"), text_dim=number("text_dim"),
                    visual_dim=number("visual_dim"), files=files, raw=raw)


def verify_checksums(manifest: Manifest) -> None:
    """Every file the contract needs is listed and every listed file matches its sha256."""
    needed = [f.file for f in CONTRACT.values()] + [ITEMS, ITEM_IDS]
    missing = [name for name in needed if name not in manifest.files]
    if missing:
        raise BundleError(f"{manifest.path} lists no checksum for {missing}: re-export the bundle")
    for name, entry in manifest.files.items():
        try:
            file = inside(manifest.root, name)
        except ValueError as err:
            raise BundleError(f"{manifest.path}: {err}; refusing the bundle") from None
        if not file.exists():
            raise BundleError(f"{file} is missing from bundle {manifest.version}: re-export or copy the whole folder")
        got = sha256(file)
        if got != entry.get("sha256"):
            raise BundleError(
                f"{file}: sha256 {got[:12]}… does not match the manifest's {str(entry.get('sha256'))[:12]}…; "
                f"the file was changed or half-copied after export. Re-export with `dreamstream export` "
                f"or copy the bundle folder again; refusing to serve it."
            )


def verify_signature(function: Function, session: Any, sizes: Mapping[str, int]) -> None:
    """An onnxruntime session's inputs/outputs equal the contract (names, order, dtypes, fixed widths)."""
    for kind, ports, actual in (("input", function.inputs, session.get_inputs()),
                                ("output", function.outputs, session.get_outputs())):
        names = [a.name for a in actual]
        if names != [p.name for p in ports]:
            raise BundleError(f"{function.file}: {kind}s are {names}, the contract wants {[p.name for p in ports]}; "
                              f"re-export with this version of dreamstream")
        for port, arg in zip(ports, actual):
            dtype = _ORT_TYPES.get(arg.type, arg.type)
            if dtype != port.dtype:
                raise BundleError(f"{function.file}: {kind} {port.name} is {dtype}, the contract wants {port.dtype}")
            if len(arg.shape) != len(port.shape):
                raise BundleError(f"{function.file}: {kind} {port.name} has rank {len(arg.shape)}, "
                                  f"the contract wants {port.shape}")
            if isinstance(arg.shape[0], int):
                raise BundleError(f"{function.file}: {kind} {port.name} has a fixed batch {arg.shape[0]}; "
                                  f"the batch axis must be dynamic — re-export with dynamic axes")
            for sym, got in zip(port.shape[1:], arg.shape[1:]):
                if isinstance(got, int) and got != sizes[sym]:
                    raise BundleError(f"{function.file}: {kind} {port.name} has {sym}={got}, "
                                      f"the manifest says {sizes[sym]}")


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class Bundle:
    """A verified bundle with one onnxruntime session per function (single-threaded: the worker scales by process)."""

    def __init__(self, manifest: Manifest, sessions: Mapping[str, Any]):
        self.manifest = manifest
        self.sessions = dict(sessions)
        self._items: np.ndarray | None = None
        self._item_ids: list[str] | None = None
        self._mean_user: np.ndarray | None = None

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def root(self) -> Path:
        return self.manifest.root

    def run(self, name: str, **feeds: np.ndarray) -> dict[str, np.ndarray]:
        """Run one contract function with named inputs; returns named outputs."""
        function = CONTRACT[name]
        session = self.sessions[name]
        inputs = {p.name: np.ascontiguousarray(feeds[p.name], dtype=p.dtype) for p in function.inputs}
        return dict(zip((p.name for p in function.outputs), session.run(None, inputs)))

    def dreamumm_step(self, state: np.ndarray, item: np.ndarray, weight: np.ndarray, decay: np.ndarray
                      ) -> dict[str, np.ndarray]:
        return self.run("dreamumm_step", state=state, item=item, weight=weight, decay=decay)

    def opal_step(self, item: np.ndarray, hidden: np.ndarray, global_: np.ndarray, soft: np.ndarray,
                  decay: np.ndarray) -> dict[str, np.ndarray]:
        return self.run("opal_step", item=item, hidden=hidden, soft=soft, decay=decay, **{"global": global_})

    def item_tower(self, text: np.ndarray, visual: np.ndarray) -> dict[str, np.ndarray]:
        return self.run("item_tower", text=text, visual=visual)

    def empty_opal_state(self, batch: int) -> dict[str, np.ndarray]:
        """Zero states for new users: ``hidden [B,K,H]``, ``global [B,H]``, ``soft [B,K,D]``."""
        m = self.manifest
        return {"hidden": np.zeros((batch, m.interests, m.hidden), np.float32),
                "global": np.zeros((batch, m.hidden), np.float32),
                "soft": np.zeros((batch, m.interests, m.dim), np.float32)}

    @functools.cached_property
    def hyper_categories(self) -> np.ndarray:
        """OPAL's hyper-category embeddings C [K, D], read off the ONNX step itself (once per bundle object).

        An interest that has seen no event reads out as its hyper-category
        embedding, so one probe step from a zero state, with items assigned
        to different interests, reveals every row. The worker needs it for
        users with impressions but no watch yet. Kept on the bundle, so a
        hot reload's new bundle never reads an old model's rows.
        """
        m = self.manifest
        k, d = m.interests, m.dim
        n = 64 * k
        items = np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)
        items /= np.linalg.norm(items, axis=1, keepdims=True)
        zeros = self.empty_opal_state(n)
        out = self.opal_step(items, zeros["hidden"], zeros["global"], zeros["soft"], np.ones((n, 1), np.float32))
        interests, assign = out["interests"], out["assign"]
        hyper = np.zeros((k, d), np.float32)
        for j in range(k):
            rows = np.nonzero(assign != j)[0]
            if len(rows):
                hyper[j] = interests[rows[0], j]
        return hyper

    @property
    def items(self) -> np.ndarray:
        """float32 [N, D] unit rows of the trained catalogue."""
        if self._items is None:
            self._items = np.load(self.root / ITEMS)
        return self._items

    @property
    def item_ids(self) -> list[str]:
        if self._item_ids is None:
            self._item_ids = [str(i) for i in json.loads((self.root / ITEM_IDS).read_text())]
        return self._item_ids

    @property
    def mean_user(self) -> np.ndarray:
        """``m_user``, float32 [D] unit vector; zeros [D] when the bundle ships none (exported before it existed).

        Zeros make ``refined_vector``'s push-down a no-op: a new video starts
        at its tower vector, as before the live refinement.
        """
        if self._mean_user is None:
            self._mean_user = read_mean_user(self.manifest)
        return self._mean_user


def verify_bundle(folder: str | Path) -> Manifest:
    """Check checksums and ONNX signatures of the bundle in ``folder``; returns its manifest or raises BundleError."""
    return _open(folder)[0]


def load_bundle(folder: str | Path) -> Bundle:
    """A verified :class:`Bundle` from a version folder (or a model dir: its latest version)."""
    manifest, sessions = _open(folder)
    return Bundle(manifest, sessions)


def _open(folder: str | Path) -> tuple[Manifest, dict[str, Any]]:
    folder = Path(folder)
    if not (folder / MANIFEST).exists() and folder.is_dir():
        latest = latest_version(folder)
        if latest is None:
            raise BundleError(f"{folder} holds no bundle (no <version>/manifest.json): run `dreamstream export` first")
        folder = latest
    manifest = read_manifest(folder)
    verify_checksums(manifest)
    sessions = {}
    for name, function in CONTRACT.items():
        try:
            sessions[name] = _session(manifest.root / function.file)
        except Exception as err:  # onnxruntime raises its own exception types
            raise BundleError(f"{manifest.root / function.file} cannot be loaded by onnxruntime ({err}); "
                              f"re-export the bundle") from err
        verify_signature(function, sessions[name], manifest.sizes())
    items = np.load(manifest.root / ITEMS, mmap_mode="r")
    if items.ndim != 2 or items.shape[1] != manifest.dim:
        raise BundleError(f"{manifest.root / ITEMS} has shape {items.shape}, want [N, {manifest.dim}]")
    read_mean_user(manifest)  # a wrong m_user refuses the bundle at load, not at a new video's first event
    return manifest, sessions


def read_mean_user(manifest: Manifest) -> np.ndarray:
    """The bundle's ``m_user`` [D] (float32, unit), or zeros [D] when the manifest lists no ``mean_user.npy``.

    Only a listed file counts (its checksum is verified with the others by
    :func:`verify_checksums`): an unlisted one may be a stray copy. A listed
    one that is not a unit float vector of the manifest's D is a
    :class:`BundleError`.
    """
    if MEAN_USER not in manifest.files:
        return np.zeros(manifest.dim, np.float32)
    path = manifest.root / MEAN_USER
    try:
        m = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise BundleError(f"{path} cannot be read as a .npy array ({err}); re-export the bundle") from None
    if m.shape != (manifest.dim,) or not np.issubdtype(m.dtype, np.floating):
        raise BundleError(f"{path} is {m.dtype} {m.shape}, want float32 [{manifest.dim}] (the manifest's dim): "
                          f"m_user, one unit vector; re-export the bundle")
    norm = float(np.linalg.norm(m))
    if not abs(norm - 1.0) <= UNIT_TOLERANCE:
        raise BundleError(f"{path} has norm {norm:.4g}, want a unit vector (m_user); re-export the bundle")
    return m.astype(np.float32)


def latest_version(model_dir: str | Path) -> Path | None:
    """The highest version folder of ``model_dir`` that holds a manifest (half-written ones never do)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return None
    versions = [p for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).exists()]
    return max(versions, key=lambda p: _version_key(p.name), default=None)


def _version_key(name: str) -> tuple:
    """Sort key: ``v20261123-190312-2`` by its numbers; other names after, by text."""
    numbers = tuple(int(n) for n in re.findall(r"\d+", name))
    return (1 if VERSION_RE.match(name) else 0, numbers, name)
