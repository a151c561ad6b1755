"""What the pulumi-tls provider returns, done locally with `cryptography` for the rehearsal.

Recording mocks echo inputs, which is enough to read a render; a real server needs a real key
and certificate, so the rehearsal's mocks compute them here.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

PREFIX = "tls:index/"


def _pem_key(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _load_key(pem: str):
    return serialization.load_pem_private_key(pem.encode(), password=None)


def _subject(subject: dict[str, Any] | None) -> x509.Name:
    subject = subject or {}
    attrs = []
    if subject.get("commonName"):
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, subject["commonName"]))
    if subject.get("organization"):
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, subject["organization"]))
    return x509.Name(attrs)


def _sans(inputs: dict[str, Any]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in inputs.get("dnsNames") or []]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in inputs.get("ipAddresses") or []]
    return names


def _validity(inputs: dict[str, Any]) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    return now, now + dt.timedelta(hours=float(inputs.get("validityPeriodHours", 24)))


def provide(type_: str, inputs: dict[str, Any]) -> dict[str, Any]:
    kind = type_[len(PREFIX) :].split(":")[0]
    if kind == "privateKey":
        key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
        if inputs.get("algorithm") == "RSA":
            key = rsa.generate_private_key(public_exponent=65537, key_size=int(inputs.get("rsaBits", 2048)))
        else:
            key = ec.generate_private_key(ec.SECP256R1())
        pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        return {"privateKeyPem": _pem_key(key), "publicKeyPem": pub.decode()}
    if kind == "selfSignedCert":
        key = _load_key(inputs["privateKeyPem"])
        name = _subject(inputs.get("subject"))
        start, end = _validity(inputs)
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=bool(inputs.get("isCaCertificate")), path_length=None), True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        )
        if inputs.get("isCaCertificate"):
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
            )
        cert = builder.sign(key, hashes.SHA256())
        return {"certPem": cert.public_bytes(serialization.Encoding.PEM).decode()}
    if kind == "certRequest":
        key = _load_key(inputs["privateKeyPem"])
        request = x509.CertificateSigningRequestBuilder().subject_name(_subject(inputs.get("subject")))
        sans = _sans(inputs)
        if sans:
            request = request.add_extension(x509.SubjectAlternativeName(sans), False)
        csr = request.sign(key, hashes.SHA256())
        return {"certRequestPem": csr.public_bytes(serialization.Encoding.PEM).decode()}
    if kind == "locallySignedCert":
        signed = x509.load_pem_x509_csr(inputs["certRequestPem"].encode())
        ca = x509.load_pem_x509_certificate(inputs["caCertPem"].encode())
        ca_key = _load_key(inputs["caPrivateKeyPem"])
        start, end = _validity(inputs)
        builder = (
            x509.CertificateBuilder()
            .subject_name(signed.subject)
            .issuer_name(ca.subject)
            .public_key(signed.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        )
        for ext in signed.extensions:
            builder = builder.add_extension(ext.value, ext.critical)
        cert = builder.sign(ca_key, hashes.SHA256())
        return {"certPem": cert.public_bytes(serialization.Encoding.PEM).decode()}
    return {}
