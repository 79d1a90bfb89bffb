"""TLS towards the broker, client side: what the gateway and the simulated devices present and trust."""
from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path


class TlsFileError(ValueError):
    """A TLS file that does not load; `which` is the field: ca_file or cert_file."""

    def __init__(self, which: str, reason: str) -> None:
        super().__init__(reason)
        self.which, self.reason = which, reason


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The CA that the broker's certificate must chain to, and optionally this client's certificate and key.

    Plain paths rather than an SSLContext, so that the setting crosses a
    process boundary (the gateway's MQTT child, the simulator's load workers).
    """

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")

    def context(self) -> ssl.SSLContext:
        """Verifies the broker against `ca_file` only (not the system's CAs) and its host name.

        Raises TlsFileError naming the file that does not load.
        """
        try:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file))
        except (ssl.SSLError, OSError) as e:
            raise TlsFileError("ca_file", f"{self.ca_file} is not a usable CA certificate: {e}") from None
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None:
            try:
                # No passphrase: without this, OpenSSL would ask for one on the terminal and a service would hang.
                ctx.load_cert_chain(str(self.cert_file), str(self.key_file) if self.key_file else None,
                                    password=lambda: b"")
            except (ssl.SSLError, OSError) as e:
                raise TlsFileError("cert_file", f"{self.cert_file} and {self.key_file} are not a certificate "
                                                f"and its key: {e}") from None
        return ctx
