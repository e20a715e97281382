"""Pure checks of the lab's naming, cache keys and input validation (no root needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.hosts import LabHost
from lab.image import BASE_PACKAGES, LAB_ROLE_PACKAGES, build_base_image, image_key
from lab.net import IFNAMSIZ, PREFIX, LabError, LabNetwork, short_name


def test_short_names_fit_ifnamsiz_carry_prefix_and_differ_between_labs() -> None:
    names = {short_name(kind, lab, host) for kind in "vnb" for lab in ("a", "qptest", "x" * 31)
             for host in ("h1", "validator-primary-with-a-long-name", "h2")}
    assert len(names) == 27
    assert all(len(n) <= IFNAMSIZ and n.startswith(PREFIX) for n in names)
    assert short_name("v", "lab1", "h1") != short_name("v", "lab2", "h1")
    assert short_name("v", "lab1", "h1") == short_name("v", "lab1", "h1")


def test_short_name_rejects_multi_letter_kind() -> None:
    with pytest.raises(ValueError, match="one letter"):
        short_name("veth", "lab", "h1")


def test_image_key_tracks_packages_not_their_order() -> None:
    assert image_key(["jq", "curl"]) == image_key(["curl", "jq", "jq"])
    assert image_key(["jq"]) != image_key(["jq", "curl"])
    assert image_key(LAB_ROLE_PACKAGES) != image_key()


def test_role_packages_include_what_the_lab_needs() -> None:
    assert "nftables" in LAB_ROLE_PACKAGES and "prometheus" in LAB_ROLE_PACKAGES
    assert {"cloud-init", "openssh-server", "systemd-sysv"} <= set(BASE_PACKAGES)


def test_build_rejects_a_bad_package_name(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="not a Debian package name"):
        build_base_image(tmp_path, extra_packages=["jq; rm -rf /"])
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(("subnet", "bridge_ip", "message"), [
    ("10.42.1.0/24", "10.42.2.254", "not in subnet"),
    ("10.42.1.0/33", "10.42.1.254", "bad subnet"),
    ("10.42.1.1/24", "10.42.1.254", "bad subnet"),
])
def test_network_rejects_inconsistent_addresses(subnet: str, bridge_ip: str, message: str) -> None:
    with pytest.raises(LabError, match=message):
        LabNetwork("qpunit", subnet, bridge_ip)


def test_network_rejects_bad_name() -> None:
    with pytest.raises(LabError, match="lab network name"):
        LabNetwork("Bad Name", "10.42.1.0/24", "10.42.1.254")


@pytest.mark.parametrize(("ip", "message"), [
    ("10.42.1.254", "bridge"), ("10.42.2.5", "not a usable address"), ("10.42.1.0", "not a usable"),
    ("10.42.1.255", "not a usable"), ("host-1", "not an IPv4 address"),
])
def test_host_ip_must_be_a_usable_lab_address(ip: str, message: str, tmp_path: Path) -> None:
    net = LabNetwork("qpunit", "10.42.1.0/24", "10.42.1.254")
    with pytest.raises(LabError, match=message):
        LabHost("h1", ip, net, tmp_path, tmp_path / "h1")


def test_host_name_must_be_a_hostname(tmp_path: Path) -> None:
    net = LabNetwork("qpunit", "10.42.1.0/24", "10.42.1.254")
    with pytest.raises(LabError, match="hostname label"):
        LabHost("Host_1", "10.42.1.11", net, tmp_path, tmp_path / "h1")


def test_host_kernel_names_are_distinct_and_short(tmp_path: Path) -> None:
    net = LabNetwork("qpunit", "10.42.1.0/24", "10.42.1.254")
    h = LabHost("validator-1", "10.42.1.11", net, tmp_path, tmp_path / "h1")
    assert len(set(h.kernel_names)) == len(h.kernel_names)
    assert all(len(n) <= IFNAMSIZ and n.startswith(PREFIX) for n in h.kernel_names)


def test_boot_refuses_a_missing_image(tmp_path: Path) -> None:
    net = LabNetwork("qpunit", "10.42.1.0/24", "10.42.1.254")
    h = LabHost("h1", "10.42.1.11", net, tmp_path / "no-image", tmp_path / "h1")
    with pytest.raises(LabError, match="not a rootfs"):
        h.boot("#cloud-config\n")


def test_power_on_before_boot_is_an_error(tmp_path: Path) -> None:
    net = LabNetwork("qpunit", "10.42.1.0/24", "10.42.1.254")
    h = LabHost("h1", "10.42.1.11", net, tmp_path, tmp_path / "h1")
    with pytest.raises(LabError, match="never booted"):
        h.power_on()


def test_boot_needs_a_created_network(tmp_path: Path) -> None:
    (tmp_path / "image/etc").mkdir(parents=True)
    (tmp_path / "image/etc/os-release").write_text("ID=debian\n")
    net = LabNetwork("qpunit", "10.42.1.0/24", "10.42.1.254")
    h = LabHost("h1", "10.42.1.11", net, tmp_path / "image", tmp_path / "h1")
    with pytest.raises(LabError, match="not created"):
        h.boot("#cloud-config\n")
    assert not (tmp_path / "h1").exists()


@pytest.mark.parametrize("path", ["etc/relative", "/etc/../../escape", "/"])
def test_boot_rejects_bad_extra_file_paths_before_touching_anything(path: str, tmp_path: Path) -> None:
    (tmp_path / "image/etc").mkdir(parents=True)
    (tmp_path / "image/etc/os-release").write_text("ID=debian\n")
    net = LabNetwork("qpunit", "10.42.1.0/24", "10.42.1.254")
    net.claims._fd = -1  # pretend the network was created; the check must fire before any use of it
    h = LabHost("h1", "10.42.1.11", net, tmp_path / "image", tmp_path / "h1")
    with pytest.raises(LabError, match="extra_files path"):
        h.boot("#cloud-config\n", extra_files={path: b"x"})
    assert not (tmp_path / "h1").exists()


def test_network_exposes_plain_strings_for_logging_and_json() -> None:
    net = LabNetwork("qpunit", "10.42.1.0/24", "10.42.1.254")
    assert (net.subnet, net.bridge_ip, net.prefixlen) == ("10.42.1.0/24", "10.42.1.254", 24)
    assert net.bridge.startswith(PREFIX) and len(net.bridge) <= IFNAMSIZ
