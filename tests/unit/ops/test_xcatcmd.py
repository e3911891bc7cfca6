"""fab xcat: the command's quoting, masking of passwords in its output, the host script."""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest

from tasks.cli.fabric_compat import remainder_words
from tasks.ops import xcatcmd
from tasks.runtime.errors import BadInput
from tasks.runtime.secret import Secret
from tasks.runtime.templating import render

PASSWORD = "Sup3r s3cret!"


def test_words_after_the_double_dash_keep_their_exact_argv():
    command = xcatcmd.container_command(["chdef", "compute1", "groups=a b", "it's"], None)
    assert shlex.split(command) == ["chdef", "compute1", "groups=a b", "it's"]


def test_a_cmd_line_is_passed_as_typed():
    assert xcatcmd.container_command(None, "lsdef -t node | grep -c Object") == "lsdef -t node | grep -c Object"


@pytest.mark.parametrize("words,line,message", [
    (None, None, "no command"),
    ([], "  ", "no command"),
    (["lsdef"], "lsdef", "not both"),
    (["chdef", "compute1", "bmcpassword=x"], None, "password on a command line"),
    (None, "tabch key=x passwd.password=y", "password on a command line"),
])
def test_bad_xcat_commands_are_refused(words, line, message):
    with pytest.raises(BadInput, match=message):
        xcatcmd.container_command(words, line)


def test_the_xcat_script_quotes_the_command_for_the_container_shell(tmp_path):
    """Run the rendered script with a `docker` stand-in that runs `docker exec`'s argv locally."""
    fake = tmp_path / "bin"
    fake.mkdir()
    profile = tmp_path / "xcat.sh"
    profile.write_text("XCATFAB_PROFILE=sourced\nexport XCATFAB_PROFILE\n")
    (fake / "docker").write_text(
        "#!/bin/sh\n"
        'if [ "$1" = inspect ]; then echo true; exit 0; fi\n'
        "shift 3\n"  # exec NAME sh
        f'script=$(printf %s "$2" | sed "s|/etc/profile.d/xcat.sh|{profile}|")\n'
        'shift 2\n'
        'exec sh -c "$script" "$@"\n')
    (fake / "docker").chmod(0o755)
    words = ["printf", "%s|", "a b", "$HOME", "x;y", "$XCATFAB_PROFILE"]
    script = render("host/admin-xcat.sh.j2", name="xcatmn", command=xcatcmd.container_command(words, None))
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}")
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "a b|$HOME|x;y|$XCATFAB_PROFILE|"  # no word split, expanded or run
    line = render("host/admin-xcat.sh.j2", name="xcatmn", command="echo $XCATFAB_PROFILE; exit 3")
    proc = subprocess.run(["sh", "-c", line], capture_output=True, text=True, env=env)
    assert (proc.returncode, proc.stdout) == (3, "sourced\n")  # profile sourced, status kept


def test_a_stopped_container_is_status_125(tmp_path):
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\n[ \"$1\" = inspect ] && echo false\nexit 0\n")
    fake.chmod(0o755)
    script = render("host/admin-xcat.sh.j2", name="xcatmn", command="lsdef")
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                          env=dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}"))
    assert proc.returncode == 125 and "not running" in proc.stderr


def test_output_masks_password_attributes_and_known_secrets():
    mask = xcatcmd.output_masker(False, [Secret(PASSWORD)])
    assert mask("    bmcpassword=abc") == "    bmcpassword=********"
    assert mask("    bmc=10.0.0.5") == "    bmc=10.0.0.5"
    assert PASSWORD not in mask(f'"compute1","{PASSWORD}"')
    shown = xcatcmd.output_masker(True, [])
    assert shown("    bmcpassword=abc") == "    bmcpassword=abc"


def test_output_masks_password_columns_of_tabdump_and_nodels_values():
    mask = xcatcmd.output_masker(False, [])
    assert mask("#key,username,password,cryptmethod,authdomain,comments,disable") == \
        "#key,username,password,cryptmethod,authdomain,comments,disable"
    assert mask('"system","root","cluster",,,,') == '"system","root","********",,,,'
    assert mask('"ipmi","ADMIN",,,,,') == '"ipmi","ADMIN",,,,,'  # nothing to hide: untouched
    assert mask('"a,b","x""y","s3,cr""et",,,,') == '"a,b","x""y","********",,,,'
    # The next table's header resets the columns.
    assert mask("#node,groups,comments,disable") == "#node,groups,comments,disable"
    assert mask('"cn01","all",,') == '"cn01","all",,'
    assert mask("cn01: ipmi.password: s3cret") == "cn01: ipmi.password: ********"
    assert mask("cn01: ipmi.username: ADMIN") == "cn01: ipmi.username: ADMIN"
    shown = xcatcmd.output_masker(True, [])
    shown("#key,username,password")
    assert shown('"system","root","cluster"') == '"system","root","cluster"'


def test_remainder_words_come_from_argv_with_their_quoting():
    argv = ["fab", "-H", "h", "xcat", "--", "chdef", "compute1", "groups=a b"]
    assert remainder_words("chdef compute1 groups=a b", argv) == ["chdef", "compute1", "groups=a b"]
    # argv that does not match the remainder: fall back to splitting the string
    assert remainder_words("chdef compute1 groups=a b", ["fab"]) == ["chdef", "compute1", "groups=a", "b"]
