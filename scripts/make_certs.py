"""Make a local CA and the certificates for TLS / mutual TLS between the services.

    python scripts/make_certs.py                      # into .certs/ (make certs)
    python scripts/make_certs.py --out DIR --dns coordinator.ml.svc.cluster.local

Writes, laid out like the Helm chart's TLS Secret (so --tls-dir of the chart's probe
script and `specdec serve --tls-* DIR/...` both work):
    ca.crt, ca.key          the CA (keep ca.key private; only ca.crt is distributed)
    tls.crt, tls.key        the services' identity: SAN localhost, 127.0.0.1, ::1 and
                            every --dns name; extended key usage serverAuth AND clientAuth,
                            because the coordinator presents it to the workers as a client
    client.crt, client.key  a client identity for the SDK / `specdec generate` (clientAuth)
Keys are EC P-256, unencrypted PEM, mode 0600. For local use and tests only: in a
cluster use cert-manager (or your PKI) with the same names and usages.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from pathlib import Path

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError:  # pragma: no cover
    sys.exit("scripts/make_certs.py needs the cryptography package: pip install cryptography")

LOCAL_NAMES = ("localhost",)
LOCAL_IPS = ("127.0.0.1", "::1")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "specdec"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: str, issuer: x509.Name, public_key, days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate small clock skew
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def make_ca(common_name: str, days: int):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(common_name, _name(common_name), key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue(ca_key, ca_cert, common_name: str, days: int, dns=(), ips=(), server=True, client=True):
    """A leaf certificate signed by the CA; SANs `dns` and `ips`; serverAuth/clientAuth as asked."""
    key = ec.generate_private_key(ec.SECP256R1())
    usages = [u for u, wanted in ((ExtendedKeyUsageOID.SERVER_AUTH, server), (ExtendedKeyUsageOID.CLIENT_AUTH, client))
              if wanted]
    builder = (
        _builder(common_name, ca_cert.subject, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    names = [x509.DNSName(n) for n in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _write(folder: Path, stem: str, key, cert) -> None:
    (folder / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path = folder / f"{stem}.key"
    key_path.write_bytes(b"")
    os.chmod(key_path, 0o600)  # private before the key is in it
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def make_certs(out: Path, dns: tuple[str, ...] = (), days: int = 365, ca_name: str = "specdec local CA") -> dict:
    """Write the CA, the services' and a client's certificates into `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = make_ca(ca_name, days)
    _write(out, "ca", ca_key, ca_cert)
    names = tuple(dict.fromkeys((*LOCAL_NAMES, *dns)))
    _write(out, "tls", *issue(ca_key, ca_cert, "specdec", days, dns=names, ips=LOCAL_IPS))
    _write(out, "client", *issue(ca_key, ca_cert, "specdec-client", days, server=False))
    return {stem: (out / f"{stem}.crt", out / f"{stem}.key") for stem in ("ca", "tls", "client")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".certs", help="folder to write into (default .certs)")
    parser.add_argument("--dns", action="append", default=[], metavar="NAME",
                        help="extra DNS name for the services' certificate (repeat, or comma-separate)")
    parser.add_argument("--days", type=int, default=365, help="validity (default 365)")
    args = parser.parse_args()
    dns = tuple(n.strip() for arg in args.dns for n in arg.split(",") if n.strip())
    paths = make_certs(Path(args.out), dns, args.days)
    for stem, (cert, key) in paths.items():
        print(f"{stem}: {cert} {key}")


if __name__ == "__main__":
    main()
