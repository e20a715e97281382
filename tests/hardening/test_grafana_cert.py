"""Grafana's certificate covers the URL the stack exports (public IPv4, or the configured DNS name).

Under mocks the TLS provider does not run, so the test issues a real certificate from a real CA with exactly
the subject and SANs the program hands to `tls.CertRequest`, and lets `openssl verify` check it against the
host of the exported `grafanaUrl` (-verify_ip / -verify_hostname), the way a browser trusting the stack CA
would.
"""

from __future__ import annotations

import copy
import datetime
import ipaddress
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from qpool.program import ProgramRun, run_program
from qpool.stacks import load_stack

CSR = "tls:index/certRequest:CertRequest"


def _run(dns_name: str | None) -> ProgramRun:
    raw = copy.deepcopy(load_stack("testnet").raw)
    if dns_name:
        raw["monitoring"]["grafanaDnsName"] = dns_name
    return run_program("testnet", raw, {})


def _issue(csr_inputs: dict, ca_dir: Path) -> tuple[Path, Path]:  # type: ignore[type-arg]
    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = datetime.datetime.now(datetime.UTC)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("stack CA")).issuer_name(name("stack CA"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now)
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in csr_inputs.get("dnsNames", [])]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in csr_inputs.get("ipAddresses", [])]
    leaf = (x509.CertificateBuilder().subject_name(name(csr_inputs["subject"]["commonName"]))
            .issuer_name(ca.subject).public_key(leaf_key.public_key()).serial_number(2).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_pem, leaf_pem = ca_dir / "ca.pem", ca_dir / "grafana.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    leaf_pem.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    return ca_pem, leaf_pem


def _openssl_verify(ca: Path, leaf: Path, host: str) -> subprocess.CompletedProcess[str]:
    try:
        ipaddress.ip_address(host)
        check = ["-verify_ip", host]
    except ValueError:
        check = ["-verify_hostname", host]
    return subprocess.run(["openssl", "verify", "-CAfile", str(ca), *check, str(leaf)], capture_output=True,
                          text=True, timeout=30)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
@pytest.mark.parametrize("dns_name", [None, "grafana.testnet.quantapool.example"])
def test_certificate_verifies_for_the_exported_url(dns_name: str | None, tmp_path: Path) -> None:
    run = _run(dns_name)
    url = run.outputs["grafanaUrl"]
    host = urlsplit(url).hostname
    assert host and (host == dns_name if dns_name else ipaddress.ip_address(host).version == 4), url
    (csr,) = run.of_type(CSR)
    ca, leaf = _issue(csr.plain_inputs(), tmp_path)
    ok = _openssl_verify(ca, leaf, host)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # control: the same check fails for a name the certificate does not carry
    bad = _openssl_verify(ca, leaf, "203.0.113.254" if not dns_name else "other.quantapool.example")
    assert bad.returncode != 0, bad.stdout


def test_grafana_dns_name_is_checked() -> None:
    from core.config import ConfigError, load_stack_config

    raw = copy.deepcopy(load_stack("testnet").raw)
    raw["monitoring"]["grafanaDnsName"] = "https://not a name"
    with pytest.raises(ConfigError) as err:
        load_stack_config(raw)
    assert any("grafanaDnsName" in str(issue) for issue in err.value.issues), err.value.issues
