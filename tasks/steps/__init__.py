"""The deploy steps, one module (or package) each: docker, image, bridge, container, xcat, iso.

A step's whole story is found by its name: ``tasks/steps/<step>.py`` (its
fact parser, plan and apply), ``templates/host/facts/<step>.sh.j2`` (its fact
fragment), ``templates/host/<step>-*`` (what it runs on a host), and
``tests/unit/steps/test_<step>.py``. ``base`` holds what every step shares;
``hostnet`` parses the ``host`` fragment every step reads.
"""
