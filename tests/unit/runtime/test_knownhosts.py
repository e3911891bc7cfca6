"""known_hosts reading and the host-key policy (tasks/runtime/knownhosts.py): pure logic."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAB = str(Path(sys.executable).with_name("fab"))


# --------------------------------------------------------------------------- known_hosts reading (tasks/ssh.py)


@pytest.fixture(scope="module")
def keys():
    import paramiko

    return [paramiko.ECDSAKey.generate() for _ in range(3)]


def line(names, key):
    return f"{names} {key.get_name()} {key.get_base64()}"


def test_known_hosts_skips_unusable_lines_and_keeps_revoked(tmp_path, keys):
    from tasks.runtime.knownhosts import read_known_hosts

    first = tmp_path / "known_hosts"
    first.write_text("\n".join([
        "# comment",
        "@cert-authority *.example.org " + f"{keys[2].get_name()} {keys[2].get_base64()}",
        "broken ssh-ed25519 AAAA!!!",           # paramiko raised here and stopped every connection
        "short-line",
        line("web1,198.51.100.7", keys[0]),
        "@revoked * " + f"{keys[1].get_name()} {keys[1].get_base64()}",
    ]) + "\n")
    known = read_known_hosts([str(first), str(tmp_path / "missing")])
    assert [(k.patterns, k.where) for k in known.keys] == [(("web1", "198.51.100.7"), f"{first}:5")]
    assert known.revoked_entry(keys[1]).where == f"{first}:6"
    assert known.revoked_entry(keys[0]) is None


def test_known_hosts_names_hashed_wildcards_negation_and_ports(keys):
    from paramiko.hostkeys import HostKeys

    from tasks.runtime.knownhosts import host_entry as _host_entry
    from tasks.runtime.knownhosts import host_matches

    hashed = HostKeys.hash_host("198.51.100.7")
    assert host_matches("198.51.100.7", [hashed]) and not host_matches("198.51.100.8", [hashed])
    assert host_matches("node3.cluster.example", ["*.cluster.example"])
    assert not host_matches("bad.cluster.example", ["*.cluster.example", "!bad.*"])
    assert host_matches("[198.51.100.7]:2222", ["[198.51.100.7]:2222"])  # brackets are literal
    assert not host_matches("198.51.100.7", ["[198.51.100.7]:2222"])
    assert _host_entry("10.0.0.1", 22) == "10.0.0.1" and _host_entry("10.0.0.1", 2222) == "[10.0.0.1]:2222"
    assert _host_entry("[10.0.0.1]:2222", 2222) == "[10.0.0.1]:2222"  # never bracketed twice


def test_every_entry_for_a_host_counts_not_only_the_first(tmp_path, keys):
    # A stale key in the user's file must not hide the right one in the inventory's file.
    from tasks.runtime.knownhosts import read_known_hosts

    user, inventory = tmp_path / "user", tmp_path / "inventory"
    user.write_text(line("198.51.100.7", keys[1]) + "\n")
    inventory.write_text(line("198.51.100.7", keys[0]) + "\n")
    ours = read_known_hosts([str(user), str(inventory)]).for_host("198.51.100.7")
    assert [k.where for k in ours] == [f"{user}:1", f"{inventory}:1"]


def policy_for(tmp_path, files, accept_new=False, hash_names=False, entry="198.51.100.7"):
    from tasks.runtime.knownhosts import _make_policy, read_known_hosts

    record_in = str(tmp_path / "record" / "known_hosts")
    return _make_policy()("web1", entry, read_known_hosts([str(f) for f in files]), record_in,
                          accept_new, hash_names), record_in


def test_policy_accepts_a_key_any_entry_vouches_for(tmp_path, keys):
    user, inventory = tmp_path / "user", tmp_path / "inventory"
    user.write_text(line("198.51.100.7", keys[1]) + "\n")
    inventory.write_text(line("198.51.100.7", keys[0]) + "\n")
    policy, _ = policy_for(tmp_path, [user, inventory])
    policy.missing_host_key(None, "198.51.100.7", keys[0])  # no exception: accepted


def test_policy_refuses_changed_revoked_and_unknown_keys(tmp_path, keys):
    from tasks.runtime.ssh import ConnectError

    known = tmp_path / "known"
    known.write_text(line("198.51.100.7", keys[0]) + "\n@revoked * " + f"{keys[2].get_name()} {keys[2].get_base64()}\n")
    policy, record_in = policy_for(tmp_path, [known], accept_new=True)
    with pytest.raises(ConnectError) as info:
        policy.missing_host_key(None, "198.51.100.7", keys[1])
    assert "CHANGED" in info.value.message and f"{known}:1" in info.value.message
    with pytest.raises(ConnectError) as info:
        policy.missing_host_key(None, "198.51.100.7", keys[2])
    assert "REVOKED" in info.value.message
    assert not os.path.exists(record_in)  # accept-new never records a changed or revoked key
    policy, record_in = policy_for(tmp_path, [known], entry="198.51.100.8")
    with pytest.raises(ConnectError) as info:
        policy.missing_host_key(None, "198.51.100.8", keys[1])
    assert info.value.message.startswith("unknown host key ecdsa-sha2-nistp256 SHA256:")
    assert "rerun with --accept-new-host-keys" in info.value.message
    assert f"ssh-keyscan 198.51.100.8 >> {record_in}" in info.value.message


@pytest.mark.parametrize("hash_names", [False, True])
def test_policy_accept_new_records_the_key_then_knows_it(tmp_path, keys, hash_names):
    from tasks.runtime.knownhosts import read_known_hosts

    policy, record_in = policy_for(tmp_path, [], accept_new=True, hash_names=hash_names, entry="[198.51.100.9]:2222")
    policy.missing_host_key(None, "[198.51.100.9]:2222", keys[0])
    text = Path(record_in).read_text()
    assert text.startswith("|1|" if hash_names else "[198.51.100.9]:2222 ")
    ours = read_known_hosts([record_in]).for_host("[198.51.100.9]:2222")
    assert len(ours) == 1 and ours[0].key.asbytes() == keys[0].asbytes()
