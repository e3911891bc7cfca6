"""What a task does on one host: ``deploy`` (the steps' life cycle) and the day-2
operations ``xcatcmd`` (fab xcat), ``node``, ``status``, ``teardown``, and
``inventory_view`` (fab inventory)."""
