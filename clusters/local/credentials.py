"""Non-admin identities for the local cluster: client certificates and kubeconfigs.

kwokctl's admin user is in ``system:masters``, which API Priority and Fairness
exempts: load sent with it never queues and never gets a 429. Load generators
(the telemetry storm), CoreDNS and the rescue components therefore get their
own identities, signed by the cluster's CA and bound by RBAC to what they need.
"""

from __future__ import annotations

import base64
import datetime as dt
import warnings
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Identity:
    """A user the API server authenticates by client certificate."""

    user: str
    groups: tuple[str, ...]
    kubeconfig_name: str


TELEMETRY = Identity(
    "blackstart:telemetry", ("blackstart:telemetry-agents",), "telemetry.kubeconfig"
)
COREDNS = Identity("blackstart:coredns", ("blackstart:dns",), "coredns.kubeconfig")
RESCUE_CONTROLLER = Identity(
    "blackstart:rescue-controller", ("blackstart:rescue",), "rescue-controller.kubeconfig"
)
RESCUE_AGENT = Identity(
    "blackstart:rescue-agent", ("blackstart:rescue",), "rescue-agent.kubeconfig"
)
IDENTITIES = (TELEMETRY, COREDNS, RESCUE_CONTROLLER, RESCUE_AGENT)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sign_client_cert(
    ca_cert_pem: bytes, ca_key_pem: bytes, identity: Identity
) -> tuple[bytes, bytes]:
    """A client certificate (CN = user, O = groups) and its key, both PEM."""
    with warnings.catch_warnings():
        # kwokctl's CA has a non-positive serial number; cryptography warns but accepts it
        warnings.simplefilter("ignore")
        ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in identity.groups]
        + [x509.NameAttribute(NameOID.COMMON_NAME, identity.user)]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def kubeconfig_for(
    server: str, ca_cert_pem: bytes, cert_pem: bytes, key_pem: bytes, cluster: str, user: str
) -> dict[str, object]:
    """A self-contained kubeconfig (certificates embedded) for one user."""
    context = f"{cluster}-{user.replace(':', '-')}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(cert_pem),
                    "client-key-data": _b64(key_pem),
                },
            }
        ],
        "contexts": [{"name": context, "context": {"cluster": cluster, "user": user}}],
        "current-context": context,
    }


def write_identity_kubeconfigs(
    pki_dir: Path, server: str, cluster: str, out_dir: Path
) -> dict[str, Path]:
    """Sign every blackstart identity with the cluster CA; write one kubeconfig each."""
    return write_identities_signed_by(
        (pki_dir / "ca.crt").read_bytes(), (pki_dir / "ca.key").read_bytes(), server, cluster,
        out_dir,
    )  # fmt: skip


def write_identities_signed_by(
    ca_cert: bytes, ca_key: bytes, server: str, cluster: str, out_dir: Path
) -> dict[str, Path]:
    """:func:`write_identity_kubeconfigs` with the CA given (a kind cluster's, read from its
    control-plane node): {user: kubeconfig path}. The CA key is used here and kept nowhere."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for identity in IDENTITIES:
        cert, key = sign_client_cert(ca_cert, ca_key, identity)
        path = out_dir / identity.kubeconfig_name
        config = kubeconfig_for(server, ca_cert, cert, key, cluster, identity.user)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        written[identity.user] = path
    return written
