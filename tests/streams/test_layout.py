"""The worker's layout keeps its promises: private APIs only in compat/, no index sidecar in streams/, guarded shims."""
from __future__ import annotations

import ast
import importlib
import logging
import pkgutil
from pathlib import Path

import pytest

from dreamstream.settings import Settings
from streams import compat

REPO = Path(__file__).resolve().parents[2]
PRIVATE_OK = {"_exit", "_current_frames", "_replace", "_asdict", "_fields", "_make"}  # stdlib's public underscores


def python_files(*folders: str) -> list[Path]:
    return [p for folder in folders for p in (REPO / folder).rglob("*.py")]


def private_accesses(path: Path) -> list[str]:
    """``obj._name`` where ``obj`` is not ``self``/``cls``: a reach into another object's privates."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            if owner not in ("self", "cls") and node.attr not in PRIVATE_OK:
                found.append(f"{path.name}:{node.lineno} .{node.attr}")
    return found


def test_only_compat_touches_private_attributes() -> None:
    outside = [p for p in python_files("streams", "dreamstream") if "compat" not in p.parts]
    offenders = [hit for p in outside for hit in private_accesses(p)]
    assert not offenders, "private API use outside streams/compat/: " + ", ".join(offenders)


def test_the_private_access_check_can_fail(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f(self, producer):\n    self._x = 1\n    return producer._ensure_producer()\n")
    assert private_accesses(sample) == ["sample.py:3 ._ensure_producer"]


def test_streams_never_imports_the_index_sidecar() -> None:
    for path in python_files("streams"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.startswith("dreamstream.index") for n in names), f"{path} imports {names}"


def test_every_compat_module_declares_its_shim_and_the_installed_libraries_are_in_range() -> None:
    for info in pkgutil.iter_modules(compat.__path__):
        module = importlib.import_module(f"streams.compat.{info.name}")
        shim = getattr(module, "SHIM", None)
        assert shim is not None, f"streams.compat.{info.name} declares no SHIM (library, tested range, remove when)"
        assert shim.remove_when, info.name
        assert shim.in_range(), f"{shim.library} {shim.installed()} is outside {shim.tested} ({info.name})"


def test_a_library_outside_a_shims_range_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    stale = compat.shim("streams.compat.example", "aiokafka", ("0.1", "0.2"), "never")
    try:
        with caplog.at_level(logging.WARNING, logger="streams.compat"):
            assert stale in compat.check_versions()
        assert "streams.compat.example" in caplog.text and "re-check" in caplog.text
    finally:
        compat.SHIMS.remove(stale)


@pytest.mark.parametrize("broker,kind,dev", [
    ("kafka://127.0.0.1:9092", "auto", True), ("kafka://localhost:9092", "auto", True),
    ("kafka://kafka-0.kafka:9092,kafka-1.kafka:9092", "auto", False), ("kafka://127.0.0.1:9092", "kafka", False),
    ("kafka://broker:9092", "tansu", True),
])
def test_development_broker_repairs_are_on_for_tansu_only(broker: str, kind: str, dev: bool) -> None:
    from streams.compat.tansu_rows import faust_settings

    s = Settings(broker=broker, broker_kind=kind)
    assert s.dev_broker is dev
    assert faust_settings(s) == ({"recovery_consistency_check": False} if dev else {})


def test_every_streams_module_stays_small() -> None:
    """The layout's promise to a newcomer: no module in streams/ over ~250 lines."""
    sizes = {p.relative_to(REPO): len(p.read_text().splitlines()) for p in python_files("streams")}
    assert max(sizes.values()) <= 260, {str(p): n for p, n in sizes.items() if n > 260}
