"""The runtime: what every task and step stands on.

Settings and the inventory (``config``, ``presets``, ``values``,
``inventory``, ``validate``), SSH connections and host keys (``ssh``,
``knownhosts``), remote commands (``remote``), facts in one round trip
(``facts``), one host's run (``hostrun``), the one host executor
(``executor``), the guarded network change (``guarded``), reports and output
(``report``), templating and the controller cache (``templating``,
``cache``), secrets (``secret``) and the errors (``errors``). Nothing here
imports from the layers above (steps, ops, cli).
"""
