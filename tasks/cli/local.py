"""The local tasks, as the collection ``inv`` loads (``tasks.ns``).

    inv render --out DIR [--preset P] [--host NAME]
    inv build-image [--tag T] [--preset P] [--no-cache]
    inv lab.up [--hosts N] | inv lab.status | inv lab.down        (in a checkout)
    inv vmlab.up [--hosts N] | inv vmlab.status | inv vmlab.down  (in a checkout)

The labs are test infrastructure (tests/labkit/); they are part of the
collection when the checkout's tests are importable, as in a clone of the
repository.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from invoke import Collection
from invoke.exceptions import Exit

from ..runtime.errors import BadInput
from ..runtime.inventory import default_inventory_path, load_hosts
from ..steps.buildctx import BuildError, build_local, render_build_context
from .flags import xtask
from .runner import bad_input_exits

BUILD_HELP = {
    "preset": "image preset: el9 (default), el8, ubuntu, legacy, lab",
    "host": "use this inventory host's settings",
    "inventory": "inventory file (default: $XCATFAB_INVENTORY or ./hosts.ini)",
    "set": "override an inventory key, KEY=VALUE (repeatable)",
}


def image_config(preset=None, host=None, inventory=None, overrides=()):
    """The settings to build with: one inventory host's, or a bare preset's."""
    sets = list(overrides or ())
    if preset:
        sets.append(f"preset={preset}")
    if host:
        return load_hosts(inventory or default_inventory_path(), names=[host], overrides=sets)[0]
    return load_hosts(None, names=["localhost"], overrides=sets)[0]


@xtask(help=dict(BUILD_HELP, out="directory to write the build context into (created if missing)"))
def render(c, out, preset=None, host=None, inventory=None, set=None):
    """Render the image build context (Dockerfile, repo files, entrypoint) into --out."""
    with bad_input_exits():
        cfg = image_config(preset, host, inventory, set)
        try:
            digest = render_build_context(cfg, out)
        except OSError as exc:
            raise BadInput("--out", None, f"cannot write the build context into {out}: "
                                          f"{exc.strerror or exc}") from None
    print(f"rendered preset {cfg.preset} into {out} (context {digest})")


@xtask(name="build-image", help=dict(BUILD_HELP, tag="image tag (default: the preset's, e.g. "
                                                      "xcatfab/xcat:latest-el9)",
                                     no_cache="rebuild even when the image's context hash is current"))
def build_image(c, tag=None, preset=None, host=None, inventory=None, no_cache=False, set=None):
    """Render the build context and `docker build` it on the local engine.

    The image is labelled with a hash of the rendered context; when the
    local image already carries that hash, nothing is built (exit 0).
    """
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


#: The checkout's root, when this package runs from one (the labs live in its tests/).
CHECKOUT = Path(__file__).resolve().parents[2]


def _lab_collections() -> list:
    """The labs' collections, when this package runs from a checkout with its tests/labkit.

    Invoke puts the collection's own directory on sys.path, not the checkout's
    root, so the root is added for the labs' package to be found.
    """
    if (CHECKOUT / "tests" / "labkit").is_dir() and str(CHECKOUT) not in sys.path:
        sys.path.append(str(CHECKOUT))
    found = []
    for module in ("tests.labkit.netns.tasks", "tests.labkit.vm.tasks"):
        try:
            present = importlib.util.find_spec(module) is not None
        except ImportError:  # tests.labkit itself is not there: an installed copy, not a checkout
            present = False
        if present:
            found.append(importlib.import_module(module).ns)
    return found


ns = Collection(render, build_image)
for _lab in _lab_collections():
    ns.add_collection(_lab)
