"""The command line: the ``fab`` collection (``fab``), the ``inv`` collection
(``local``), host selection (``targets``), the flag grammar (``flags``), the
run around every task (``runner``), and every workaround for Fabric
(``fabric_compat``)."""
