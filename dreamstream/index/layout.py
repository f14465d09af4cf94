"""The names of the index dir, and the one check every model namespace name passes.

The index dir holds the default namespace's version folders and pointer
files, and one folder per other namespace (``<index dir>/<namespace>/``):

* ``CURRENT`` (a namespace's served version), ``HISTORY.json`` (when each
  was published), ``vYYYYMMDDTHHMMSS.ffffffZ/`` version folders and
  ``.building-*`` folders of builds in progress, in every namespace folder;
* ``SERVING`` (which namespace readers use) and ``MONITOR.json`` (live
  quality), at the root only.

A namespace name becomes a folder beside those and a suffix of topic names,
so :func:`check_namespace` refuses every name that could be mistaken for
one of them: a dot name (``.``, ``..``, ``.building-*``, a lock or temp
file) would write into the default namespace's folder or the index dir's
parent, or be pruned by the default indexer as a crashed build; a pointer
file's name would break that file for every reader; an index version name
would make ``rollout retire`` delete the default namespace's serving
version. Settings, ``Settings.in_namespace``, the indexer, the client and
``rollout`` all use this one check.
"""
from __future__ import annotations

import re

from dreamstream.errors import UserError

CURRENT = "CURRENT"
HISTORY = "HISTORY.json"
SERVING = "SERVING"
MONITOR = "MONITOR.json"
MANIFEST = "manifest.json"
BUILDING_PREFIX = ".building-"
RESERVED = frozenset(n.lower() for n in (CURRENT, HISTORY, SERVING, MONITOR, MANIFEST))
VERSION_NAME = re.compile(r"^v\d{8}T\d{6}\.\d{6}Z$", re.IGNORECASE)  # builder.new_version_name's names
NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


class InvalidNamespace(UserError, ValueError):
    """A model namespace name that is not allowed (a ValueError too, so settings validation reports it)."""


def is_version_name(name: str) -> bool:
    """Is ``name`` an index version folder's name (``v20260101T000000.000001Z``)?"""
    return bool(VERSION_NAME.match(name))


def check_namespace(name: object) -> str:
    """``name`` when it may name a model namespace ("" is the default one); :class:`InvalidNamespace` says why not.

    Letters, digits, ``.``, ``_`` and ``-``, at most 80, starting with a
    letter or digit; not a file name of the index dir (compared without
    case: some volumes ignore it) and not an index version name.
    """
    if not isinstance(name, str):
        raise InvalidNamespace(f"a namespace is a text name, got {type(name).__name__} {name!r:.60}")
    if name == "":
        return name
    if not NAMESPACE.match(name):
        raise InvalidNamespace(f"namespace {name!r:.100} is not allowed: use letters, digits, '.', '_' and '-' (at "
                               "most 80), starting with a letter or digit (a bundle version such as v20261123-190312)")
    if name.lower() in RESERVED:
        raise InvalidNamespace(f"namespace {name!r} is the name of a file of the index dir; choose another name")
    if is_version_name(name):
        raise InvalidNamespace(f"namespace {name!r} is an index version name (a folder of the default namespace's "
                               "index), not a namespace; namespaces are named after bundle versions")
    return name
