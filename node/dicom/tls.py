"""DICOM TLS client side: the context deliveries use for destinations with ``tls: true``.

The node's certificate (``node.tls.certificate``/``private_key``) is presented for mutual TLS when set; the
peer's certificate is checked against ``node.tls.ca_certificates`` (the system's CAs when unset), and its
name against the destination's host.
"""

from __future__ import annotations

import ssl

from node.config import Settings


def client_context(settings: Settings) -> ssl.SSLContext:
    """A verifying TLS client context for deliveries; raises ValueError naming the key on bad material."""
    tls = settings.node.tls
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_certificates) if tls.ca_certificates else None
        )
        if tls.certificate is not None:
            if tls.private_key is None:
                raise ValueError("node.tls.certificate is set but node.tls.private_key is not")
            context.load_cert_chain(str(tls.certificate), str(tls.private_key))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"node.tls: cannot load the certificates for deliveries: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
