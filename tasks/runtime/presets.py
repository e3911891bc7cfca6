"""Image presets: named bundles of defaults for the xCAT image.

A preset gives the base image, the package family (``el`` uses yum repo
files, ``apt`` uses an apt source), the xCAT repository URLs, the xCAT
package names (``xcat_packages``) and the other packages the image needs
(``base_packages``, not an inventory key) and, for the lab, the container's
capability set. Preset values sit
between the built-in defaults and anything the inventory sets explicitly, so
``preset=legacy`` plus ``base_image=...`` uses that base image.
"""

from __future__ import annotations

from typing import Any, Optional

_XCAT = "https://xcat.org/files/xcat/repos"

#: Image presets. ``family`` picks the package tooling the templates use.
PRESETS: dict[str, dict[str, Any]] = {
    # A current release on an EL9-family base: the default.
    "el9": {
        "family": "el",
        "pkg": "dnf",
        "base_image": "rockylinux:9",
        "xcat_version": "latest",
        "xcat_core_repo": _XCAT + "/yum/{xcat_version}/xcat-core",
        "xcat_dep_repo": _XCAT + "/yum/xcat-dep/rh9/x86_64",
        "xcat_core_gpgkey": _XCAT + "/yum/{xcat_version}/xcat-core/repodata/repomd.xml.key",
        "xcat_dep_gpgkey": _XCAT + "/yum/xcat-dep/rh9/x86_64/repodata/repomd.xml.key",
        "apt_suite": "",
        "vault_url": "",
        "xcat_packages": ["xCAT"],
        "base_packages": ["openssh-server", "rsyslog", "iproute", "procps-ng", "httpd"],
        "image": "xcatfab/xcat:{xcat_version}-el9",
    },
    "el8": {
        "family": "el",
        "pkg": "dnf",
        "base_image": "rockylinux:8",
        "xcat_version": "latest",
        "xcat_core_repo": _XCAT + "/yum/{xcat_version}/xcat-core",
        "xcat_dep_repo": _XCAT + "/yum/xcat-dep/rh8/x86_64",
        "xcat_core_gpgkey": _XCAT + "/yum/{xcat_version}/xcat-core/repodata/repomd.xml.key",
        "xcat_dep_gpgkey": _XCAT + "/yum/xcat-dep/rh8/x86_64/repodata/repomd.xml.key",
        "apt_suite": "",
        "vault_url": "",
        "xcat_packages": ["xCAT"],
        "base_packages": ["openssh-server", "rsyslog", "iproute", "procps-ng", "httpd"],
        "image": "xcatfab/xcat:{xcat_version}-el8",
    },
    # xCAT's apt tree on Ubuntu (the package is lowercase `xcat` since 16.04).
    "ubuntu": {
        "family": "apt",
        "pkg": "apt-get",
        "base_image": "ubuntu:20.04",
        "xcat_version": "latest",
        "xcat_core_repo": _XCAT + "/apt/{xcat_version}/xcat-core",
        "xcat_dep_repo": _XCAT + "/apt/xcat-dep",
        "xcat_core_gpgkey": _XCAT + "/apt/apt.key",
        "xcat_dep_gpgkey": _XCAT + "/apt/apt.key",
        "apt_suite": "trusty",
        "vault_url": "",
        "xcat_packages": ["xcat"],
        "apt_components": ["main"],
        "base_packages": ["openssh-server", "rsyslog", "iproute2", "procps", "apache2"],
        "image": "xcatfab/xcat:{xcat_version}-ubuntu",
    },
    # The 2015 guide as written: CentOS 6 (now only on vault.centos.org) and xCAT 2.9.
    "legacy": {
        "family": "el",
        "pkg": "yum",
        "base_image": "centos:centos6",
        "xcat_version": "2.9",
        "xcat_core_repo": "https://sourceforge.net/projects/xcat/files/yum/{xcat_version}/xcat-core",
        "xcat_dep_repo": "https://sourceforge.net/projects/xcat/files/yum/xcat-dep/rh6/x86_64",
        "xcat_core_gpgkey": "https://sourceforge.net/projects/xcat/files/yum/{xcat_version}"
        "/xcat-core/repodata/repomd.xml.key",
        "xcat_dep_gpgkey": "https://sourceforge.net/projects/xcat/files/yum/xcat-dep/rh6/x86_64"
        "/repodata/repomd.xml.key",
        "apt_suite": "",
        "vault_url": "https://vault.centos.org/6.10",
        "xcat_packages": ["xCAT"],
        "base_packages": ["openssh-server", "rsyslog", "iproute", "procps", "httpd"],
        "image": "xcat:xcat{xcat_version}",
    },
    # The lab: Debian bookworm base imported from debootstrap, the stand-in xCAT
    # from the controller's repo, and this kernel's limits (no --privileged).
    "lab": {
        "family": "apt",
        "pkg": "apt-get",
        "base_image": "xcatfab/bookworm-minbase:bookworm",
        "xcat_version": "standin",
        "xcat_core_repo": "http://198.18.0.1:8089/xcat-core",
        "xcat_dep_repo": "http://198.18.0.1:8089/xcat-dep",
        "xcat_core_gpgkey": "http://198.18.0.1:8089/xcat-lab.asc",
        "xcat_dep_gpgkey": "http://198.18.0.1:8089/xcat-lab.asc",
        "apt_suite": "bookworm",
        "vault_url": "",
        "xcat_packages": ["xcat"],
        "apt_components": ["main"],
        "base_packages": ["openssh-server", "rsyslog", "iproute2", "procps"],
        "image": "xcatfab/xcat:standin-lab",
        "privileged": False,
        "cap_add": ["ALL"],
        "cap_drop": ["SYS_RESOURCE"],
    },
}


def preset_value(preset: str, key: str, version: Optional[str] = None) -> Any:
    """A preset's value for ``key``, with ``{xcat_version}`` filled in."""
    value = PRESETS[preset].get(key)
    if isinstance(value, str) and "{xcat_version}" in value:
        value = value.format(xcat_version=version or PRESETS[preset]["xcat_version"])
    return value

