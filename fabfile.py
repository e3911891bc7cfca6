"""xcatfab's remote tasks for `fab`: `fab -H dhost1 deploy`, `fab rollout`, ...

Thin on purpose: the tasks live in tasks/cli/fab.py (and the library below
it); `inv --list` shows the local ones (render, build-image, lab.*, vmlab.*).
Loading this file also installs xcatfab's executor into the running `fab`
(tasks/cli/fabric_compat.py says why).
"""

from tasks.cli.fab import ns  # noqa: F401  (the collection fab loads)
from tasks.cli.fabric_compat import install

install()
