"""xcatfab's remote tasks for `fab`: `fab -H dhost1 deploy`, `fab rollout`, ...

Thin on purpose: the tasks live in tasks/remote_tasks.py (and the library
beside it); `inv --list` shows the local ones (render, build-image, lab.*).
"""

from tasks.remote_tasks import ns  # noqa: F401  (the collection fab loads)
