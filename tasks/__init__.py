"""xcatfab: stand up an xCAT management node in Docker on Ubuntu docker hosts.

This package is both the library and the Invoke collection ``inv`` loads:

    inv render --out DIR [--preset P] [--host NAME]
    inv build-image [--tag T] [--preset P] [--no-cache]
    inv lab.up [--hosts N] | inv lab.status | inv lab.down

The remote tasks (deploy, rollout, ...) are run with ``fab``; see fabfile.py.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

from invoke import Collection, task
from invoke.exceptions import Exit

from .inventory import EXIT_BAD_INPUT, InventoryError, default_inventory_path, load_hosts


@contextmanager
def bad_input_exits():
    """Turn :class:`InventoryError` into one line on stderr and exit status 2."""
    try:
        yield
    except InventoryError as exc:
        raise Exit(f"xcatfab: {exc}", code=EXIT_BAD_INPUT) from None


def image_config(preset=None, host=None, inventory=None, overrides=()):
    """The settings to build with: one inventory host's, or a bare preset's."""
    sets = list(overrides or ())
    if preset:
        sets.append(f"preset={preset}")
    if host:
        path = inventory or default_inventory_path()
        return load_hosts(path, names=[host], overrides=sets)[0]
    return load_hosts(None, names=["localhost"], overrides=sets)[0]


@task(
    help={
        "out": "directory to write the build context into (created if missing)",
        "preset": "image preset: el9 (default), el8, ubuntu, legacy, lab",
        "host": "render with this inventory host's settings",
        "inventory": "inventory file (default: $XCATFAB_INVENTORY or ./hosts.ini)",
        "set": "override an inventory key, KEY=VALUE (repeatable)",
    },
    iterable=["set"],
)
def render(c, out, preset=None, host=None, inventory=None, set=None):
    """Render the image build context (Dockerfile, repo files, entrypoint) into --out."""
    from .buildctx import render_build_context

    with bad_input_exits():
        cfg = image_config(preset, host, inventory, set)
    digest = render_build_context(cfg, out)
    print(f"rendered preset {cfg.preset} into {out} (context {digest})")


@task(
    name="build-image",
    help={
        "tag": "image tag (default: the preset's, e.g. xcatfab/xcat:latest-el9)",
        "preset": "image preset: el9 (default), el8, ubuntu, legacy, lab",
        "host": "build with this inventory host's settings",
        "inventory": "inventory file (default: $XCATFAB_INVENTORY or ./hosts.ini)",
        "no_cache": "rebuild even when the image's context hash is current",
        "set": "override an inventory key, KEY=VALUE (repeatable)",
    },
    iterable=["set"],
)
def build_image(c, tag=None, preset=None, host=None, inventory=None, no_cache=False, set=None):
    """Render the build context and `docker build` it on the local engine.

    The image is labelled with a hash of the rendered context; when the
    local image already carries that hash, nothing is built (exit 0).
    """
    from .buildctx import BuildError, build_local

    with bad_input_exits():
        cfg = image_config(preset, host, inventory, set)
    tag = tag or cfg.image
    try:
        built, digest = build_local(cfg, tag, no_cache=no_cache, out=sys.stdout)
    except BuildError as exc:
        raise Exit(f"xcatfab: {exc}", code=1) from None
    if built:
        print(f"built {tag} (context {digest})")
    else:
        print(f"{tag} is up to date (context {digest}): nothing to build")


def __getattr__(name):
    """``tasks.ns``, built on first use: `fab` imports this package for its
    library and should not pay for loading the lab's tasks."""
    if name == "ns":
        from . import lab

        collection = Collection(render, build_image)
        collection.add_collection(lab.ns)
        globals()["ns"] = collection
        return collection
    raise AttributeError(name)
